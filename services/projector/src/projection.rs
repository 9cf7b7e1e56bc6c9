//! The projector's sled database: applying `LRS_STORED` messages exactly once, and reading
//! the summaries back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

pub use bus::wire::SummaryKind;
use bus::wire::{EventKind, ListFilter, StoredEvents};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::contribution::{effects, Contribution, Effect};
use crate::members::{Members, Set};
use crate::order;
use crate::packed;
use crate::part::{Part, PartError};
use crate::summary::{CompanyState, HubState, MonthRange, ProgrammeState, WorkerState};

/// `m` + name: the last applied `LRS_STORED` sequence.
const META_APPLIED: &[u8] = b"mapplied";
/// The bytes on disk when the database was made as a compaction's copy ([`crate::compact`]).
const META_COPIED: &[u8] = b"mcopied";
/// `s` + statement id -> `v` (voided: never counts, even if its `stored` event comes later)
/// or `e` (erased: never counts again, whatever comes later); a statement without either
/// counts when its first contribution's [`TIMESTAMP`] key is there (one key fewer per
/// statement than a marker of its own; databases from before held `c`, which still reads as
/// counted). Makes every event idempotent and the order of events irrelevant.
const MARKER: u8 = b's';
const COUNTED: &[u8] = b"c";
const VOIDED: &[u8] = b"v";
const ERASED: &[u8] = b"e";
pub(crate) const WORKER: u8 = b'w';
pub(crate) const HUB: u8 = b'h';
pub(crate) const COMPANY: u8 = b'c';
/// `P` -> [`ProgrammeState`] ([`crate::packed`]): the programme as a whole.
pub(crate) const PROGRAMME: &[u8] = b"P";
/// Present once the programme's figures (and each company's months) are kept: a database
/// made before them is rebuilt (see [`Projection::needs_rebuild`]).
const PROGRAMME_KEPT: &[u8] = b"mprogramme1";
/// `L` + skill URI -> [`SkillLabel`] JSON: the name the latest-stored statement's context
/// gave the skill (a database from before holds the name alone, ranked below any).
const SKILL_LABEL: u8 = b'L';
/// `T` + worker + 0 + timestamp (8) + statement id (16) -> the skills the statement
/// evidenced for the worker, each as its digest (XXH3-128, 16 bytes; empty for none): a
/// worker's first and last timestamps are the ends of this range, and when the worker first
/// evidenced a skill is the first key of the range whose value names it. The timestamp is
/// milliseconds since 1970 (big-endian, sign bit flipped, so that the keys sort by time), the
/// id the UUID's bytes ([`id_bytes`]). The worker stays as text: a worker's keys then sit together, beside its
/// state, as they are written (by digest, the keys of a million statements went all over
/// the tree, and the database the ingest left grew by a fifth; BENCHMARKS.md).
const TIMESTAMP: u8 = b'T';
/// Before [`SKILLS_IN_TIMESTAMPS`]: `E` + worker + 0 + skill's digest (XXH3-128, 16) +
/// timestamp (8) + statement id (16) -> empty, a key of its own for each skill a statement
/// evidenced, where the statement's [`TIMESTAMP`] key now names them in its value.
const SKILL_TIMESTAMP: u8 = b'E';
/// Before [`TIMESTAMP`] and [`SKILL_TIMESTAMP`] (a database before [`SHORT_TIMESTAMPS`]):
/// `t` + worker + 0 + timestamp text + 0 + statement id, and `k` + worker + 0 + skill + 0 +
/// timestamp text + 0 + statement id: 96 and 166 bytes each in the bench's workload, where
/// the keys now take 61 and 77.
const TEXT_TIMESTAMP: u8 = b't';
const TEXT_SKILL_TIMESTAMP: u8 = b'k';
/// Present once the timestamp keys are the short ones ([`Projection::shorten_timestamps`]).
const SHORT_TIMESTAMPS: &[u8] = b"mtimes2";
/// Present once the skills' [`SKILL_TIMESTAMP`] keys are in the values of the
/// [`TIMESTAMP`] keys ([`Projection::skills_into_timestamps`]).
const SKILLS_IN_TIMESTAMPS: &[u8] = b"mtimes3";
/// Present once hubs' and companies' distinct sets live in member keys ([`crate::members`]).
const MEMBERS_MOVED: &[u8] = b"mmembers1";
/// Present once the counts of the sets of workers live in the workers' states.
const MEMBERSHIPS_IN_WORKERS: &[u8] = b"mmembers2";
/// Present once the workers' states name what they only count by digests
/// ([`crate::members::Digest`]).
const COUNTED_BY_DIGEST: &[u8] = b"mdigests1";
/// Present once the sets of [`Set::COUNTED_BY_FINER`] count their finer members and the
/// programme's companies per month are no longer kept ([`Projection::count_by_finer`]).
const COUNTED_BY_FINER: &[u8] = b"mmembers3";
/// Present once counted statements have no marker of their own, only their timestamp keys
/// ([`Projection::drop_counted_markers`]).
const COUNTED_BY_TIMESTAMPS: &[u8] = b"mmarkers1";
/// Present once only the sets of workers that lists read keep member keys
/// ([`crate::members::Set::LISTED`]).
const LISTED_MEMBERS_ONLY: &[u8] = b"mmembers4";
/// Present once a hub's workers are listed from its learner groups' member keys and their
/// own keys are gone ([`Projection::drop_hub_worker_keys`]).
const HUB_WORKERS_BY_GROUP: &[u8] = b"mmembers5";
/// Present once every summary state is in the binary form ([`Projection::repack_states`]).
const STATES_PACKED: &[u8] = b"mstates1";
/// Present once the workers' states write their digests as bytes ([`Projection::repack_states`]).
const DIGESTS_AS_BYTES: &[u8] = b"mstates2";
/// How many parts applied an erasure (big-endian u64; absent: none): the bytes of what
/// each erased stay in sled's old pages until a compaction's copy.
pub(crate) const ERASURES: &[u8] = b"merasures";
/// [`ERASURES`] when no page of this database, live or dead, held bytes of an erased
/// statement: set in a database made empty and in a compaction's copy made while nothing was
/// erased. While it equals [`ERASURES`], a compaction asked for that would take more than the
/// database in use keeps that database ([`crate::compact`]); otherwise the copy is what takes
/// the erased bytes out of sled's old pages.
const SCRUBBED_AT: &[u8] = b"mscrubbed";
/// `x` + `LRS_STORED` sequence(8) -> [`Parked`] JSON: a message the projector could not read,
/// kept (not skipped) until a replay applies it.
const PARKED: u8 = b'x';

/// A skill's name as kept under [`SKILL_LABEL`], with the statement that gave it: the
/// latest `stored` wins (then the greater id), so the name does not depend on the order the
/// events were applied in, which differs between replicas after a redelivery.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SkillLabel {
    stored: String,
    id: String,
    name: Value,
}

impl SkillLabel {
    fn rank(&self) -> (&str, &str) {
        (&self.stored, &self.id)
    }

    /// A kept value: a [`SkillLabel`], or a name alone as written before it (a language map,
    /// whose values are strings, never an object under `name`).
    fn read(bytes: &[u8]) -> Option<SkillLabel> {
        match serde_json::from_slice::<SkillLabel>(bytes) {
            Ok(label) if label.name.is_object() => Some(label),
            _ => serde_json::from_slice(bytes).ok().map(|name| SkillLabel {
                stored: String::new(),
                id: String::new(),
                name,
            }),
        }
    }
}

/// An `LRS_STORED` message the projector could not read: why, and the message itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Parked {
    pub sequence: u64,
    pub reason: String,
    /// The payload as received (lossy UTF-8: the events are JSON).
    pub payload: String,
}

fn parked_key(sequence: u64) -> Vec<u8> {
    let mut key = vec![PARKED];
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// A statement id as the timestamp keys hold it: the UUID's 16 bytes (the text as it is,
/// should one not be a UUID: xAPI's schema makes every id one).
fn id_bytes(id: &str) -> Vec<u8> {
    uuid::Uuid::parse_str(id).map_or_else(|_| id.as_bytes().to_vec(), |id| id.as_bytes().to_vec())
}

/// Milliseconds since 1970 as 8 bytes that sort as the times do.
fn time_bytes(at_ms: i64) -> [u8; 8] {
    ((at_ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// The timestamp text (UTC, RFC 3339 with milliseconds) of [`time_bytes`] at `at` in `key`.
fn timestamp_at(key: &[u8], at: usize) -> Option<String> {
    let bytes: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
    let at_ms = (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64;
    chrono::DateTime::from_timestamp_millis(at_ms).map(xapi::time::format_timestamp)
}

fn timestamp_prefix(worker: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(26 + worker.len());
    key.push(TIMESTAMP);
    key.extend_from_slice(worker.as_bytes());
    key.push(0);
    key
}

fn timestamp_key(contribution: &Contribution, statement: &str) -> Vec<u8> {
    short_timestamp_key(
        &contribution.worker,
        None,
        contribution.at_ms,
        &id_bytes(statement),
    )
}

/// [`TIMESTAMP`]'s key, or [`SKILL_TIMESTAMP`]'s with a skill.
fn short_timestamp_key(worker: &str, skill: Option<&str>, at_ms: i64, id: &[u8]) -> Vec<u8> {
    let mut key = match skill {
        None => timestamp_prefix(worker),
        Some(skill) => skill_prefix(worker, skill),
    };
    key.extend_from_slice(&time_bytes(at_ms));
    key.extend_from_slice(id);
    key
}

fn skill_prefix(worker: &str, skill: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(42 + worker.len());
    key.push(SKILL_TIMESTAMP);
    key.extend_from_slice(worker.as_bytes());
    key.push(0);
    key.extend_from_slice(&crate::members::digest_bytes(skill));
    key
}

/// What a contribution's [`TIMESTAMP`] key holds: the digests of its skills, each once, in
/// the digests' order (so that replicas, and a database whose skills moved in at open, hold
/// the same bytes).
fn skill_digests(contribution: &Contribution) -> Vec<u8> {
    let mut digests: Vec<[u8; 16]> = contribution
        .skills
        .iter()
        .map(|skill| crate::members::digest_bytes(skill))
        .collect();
    digests.sort_unstable();
    digests.dedup();
    digests.concat()
}

/// Adds `digest` to a [`TIMESTAMP`] key's value in its place, unless it is there.
fn add_digest(value: &mut Vec<u8>, digest: &[u8; 16]) {
    let kept: Vec<&[u8]> = value.chunks_exact(16).collect();
    if let Err(at) = kept.binary_search(&&digest[..]) {
        value.splice(16 * at..16 * at, digest.iter().copied());
    }
}

/// The [`TIMESTAMP`] key a [`SKILL_TIMESTAMP`] key of a database from before
/// [`SKILLS_IN_TIMESTAMPS`] belongs to, and the skill's digest; none for a key that does not
/// read as one.
fn timestamp_of_skill_key(skill_key: &[u8]) -> Option<(Vec<u8>, [u8; 16])> {
    let rest = skill_key.strip_prefix(&[SKILL_TIMESTAMP])?;
    let end = rest.iter().position(|byte| *byte == 0)?;
    let (worker, rest) = (&rest[..end], &rest[end + 1..]);
    let digest: [u8; 16] = rest.get(..16)?.try_into().ok()?;
    let time_and_id = rest.get(16..).filter(|rest| rest.len() > 8)?;
    let mut key = timestamp_prefix(std::str::from_utf8(worker).ok()?);
    key.extend_from_slice(time_and_id);
    Some((key, digest))
}

/// The short key of a timestamp key of a database from before [`SHORT_TIMESTAMPS`]; none
/// for a key that does not read as one.
fn shortened(text_key: &[u8]) -> Option<Vec<u8>> {
    let (&prefix, rest) = text_key.split_first()?;
    let mut parts = rest.splitn(if prefix == TEXT_SKILL_TIMESTAMP { 4 } else { 3 }, |byte| {
        *byte == 0
    });
    let worker = std::str::from_utf8(parts.next()?).ok()?;
    let skill = match prefix {
        TEXT_SKILL_TIMESTAMP => Some(std::str::from_utf8(parts.next()?).ok()?),
        _ => None,
    };
    let at = chrono::DateTime::parse_from_rfc3339(std::str::from_utf8(parts.next()?).ok()?).ok()?;
    let id = std::str::from_utf8(parts.next()?).ok()?;
    Some(short_timestamp_key(
        worker,
        skill,
        at.timestamp_millis(),
        &id_bytes(id),
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Part(#[from] PartError),
    #[error("{0}")]
    Compaction(String),
    #[error("corrupt summary under key {key:?}: {reason}")]
    Corrupt { key: Vec<u8>, reason: String },
}

/// A big-endian u64 kept under `key` (the applied sequence, a count); 0 when absent.
fn stored_u64(tree: &sled::Db, key: &[u8]) -> Result<u64, sled::Error> {
    Ok(tree
        .get(key)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

fn key(prefix: u8, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(prefix);
    key.extend_from_slice(id.as_bytes());
    key
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// How many summaries the whole list has.
    pub total: u64,
    pub items: Vec<Value>,
    /// Each item's cursor (the page after it starts behind it); empty for filtered lists.
    pub cursors: Vec<String>,
    /// Whether the page is full, so more may follow.
    pub full: bool,
}

pub struct Projection {
    tree: sled::Db,
    /// The last programme summary (see [`crate::programme`]).
    pub(crate) programme: crate::programme::Cache,
    /// Where it lives, so a rebuild can remove it once replaced.
    path: std::path::PathBuf,
    /// sled's page cache, kept for the database a rebuild makes.
    cache_bytes: u64,
    /// Member counts and summary states as recent parts wrote them, so that what a part
    /// changes is not read and decoded again (see [`Recent`]).
    recent: Mutex<Recent>,
    /// The most writes a part applies in one sled batch without a journal, and the most
    /// one sled batch of a larger part holds ([`crate::part`]).
    one_batch: usize,
    sub_batch: usize,
    /// The statements that may have a [`MARKER`] or timestamp keys, asked before sled: a new
    /// statement has neither, and at a million statements sled's "no" cost two page fetches
    /// (BENCHMARKS.md, "Why ingest slows as the store grows"). Filled from those keys after
    /// open and as statements are marked; by the statement's id as a UUID.
    seen: idfilter::IdFilter,
    /// Writes applied and not yet in sled ([`crate::overlay`]), read before sled.
    overlay: crate::overlay::Overlay,
    /// Held by a checkpoint from its freeze until sled holds the frozen layer, so that
    /// checkpoints write one after another.
    checkpointing: Mutex<()>,
    /// Parts being applied behind, which a checkpoint's sled batches wait for.
    applying: crate::overlay::Applying,
}

/// The [`Projection::seen`] filter, sized for the `held` statements the programme counts and
/// filled from the marker and timestamp keys on a thread of its own.
fn fill_seen(tree: sled::Db, held: u64) -> idfilter::IdFilter {
    idfilter::IdFilter::fill_from("leerspoor-seen", held, move || {
        let markers = tree.scan_prefix([MARKER]).keys().map(|key| {
            key.map(|key| {
                std::str::from_utf8(&key[1..])
                    .ok()
                    .and_then(|id| uuid::Uuid::parse_str(id).ok())
                    .map(|id| id.as_bytes().to_vec())
            })
        });
        // The statement id is the key's last 16 bytes.
        let timestamps = tree
            .scan_prefix([TIMESTAMP])
            .keys()
            .map(|key| key.map(|key| key.len().checked_sub(16).map(|start| key[start..].to_vec())));
        markers.chain(timestamps)
    })
}

/// The member counts of the hubs' and companies' distinct sets that recent parts wrote, most
/// recently used kept. The projector is the only writer of its database and puts every count
/// it writes here after sled (or, written behind, the overlay) took it, so an entry is what a
/// read of the projection answers. Reading each
/// count from sled was a fifth of the projector's time catching up on 200,000 statements
/// (BENCHMARKS.md, "Eighth round").
type Counts = lru::LruCache<Vec<u8>, u64>;

/// What recent parts wrote, kept in memory as written so that the next part need not read
/// it back: member counts ([`Counts`]) and decoded summary states. Every state the projection
/// writes is written by [`Projection::write`], which puts it here after sled or the overlay
/// took it, so an entry is what a read of the projection answers. Decoding the states a part
/// touched was a quarter of the written-behind apply (BENCHMARKS.md, the twenty-sixth round):
/// a hub's or a company's state is touched by nearly every pull, and decoded again each time.
struct Recent {
    counts: Counts,
    workers: lru::LruCache<String, WorkerState>,
    hubs: lru::LruCache<String, HubState>,
    companies: lru::LruCache<String, CompanyState>,
    programme: Option<ProgrammeState>,
    /// Written behind: the sort values of each summary the overlay's active layer has
    /// touched, as the layers beneath it hold them (`None`: no summary), so that an order key
    /// an earlier pull of the layer wrote is forgotten, not removed ([`order::update`]).
    beneath: PartMap<(u8, String), Option<Vec<f64>>>,
    /// The active layer `beneath` is of (`None`: written through).
    generation: Option<u64>,
}

/// How many decoded states of each kind [`Recent`] keeps: the workers, hubs and companies a
/// second of ingest touches (the ingest bench's 1,000 workers, 250 companies). At 4,096 the
/// grow to a million (250,000 workers, 5,000 companies) ended ~35 MiB larger and peaked ~50
/// higher (BENCHMARKS.md, the twenty-seventh round).
const RECENT_STATES: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(1024) {
    Some(states) => states,
    None => std::num::NonZeroUsize::MIN,
};

impl Recent {
    fn new(cache_bytes: u64) -> Recent {
        Recent {
            counts: Counts::new(counts_capacity(cache_bytes)),
            workers: lru::LruCache::new(RECENT_STATES),
            hubs: lru::LruCache::new(RECENT_STATES),
            companies: lru::LruCache::new(RECENT_STATES),
            programme: None,
            beneath: PartMap::default(),
            generation: None,
        }
    }

    /// Forgets everything (what sled holds may differ).
    fn clear(&mut self) {
        self.counts.clear();
        self.workers.clear();
        self.hubs.clear();
        self.companies.clear();
        self.programme = None;
        self.beneath.clear();
        self.generation = None;
    }
}

/// How many member counts [`Counts`] keeps: one per KiB of the configured page cache (with
/// the default 128 MiB, 131,072 counts, ~20 MiB).
fn counts_capacity(cache_bytes: u64) -> std::num::NonZeroUsize {
    let entries = usize::try_from(cache_bytes / 1024).unwrap_or(usize::MAX);
    std::num::NonZeroUsize::new(entries.max(1024)).unwrap_or(std::num::NonZeroUsize::MIN)
}

/// A part's maps: hashed with foldhash, seeded per map, not std's SipHash (hashing their keys
/// was a twentieth of the projector's apply under a backlog; BENCHMARKS.md, the forty-seventh
/// round).
type PartMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The summaries one message touches, loaded once and written back together.
#[derive(Default)]
struct Touched {
    workers: PartMap<String, WorkerState>,
    hubs: PartMap<String, HubState>,
    companies: PartMap<String, CompanyState>,
    programme: Option<ProgrammeState>,
    /// Skill names found in the statements' contexts, the latest-stored one's per skill.
    labels: PartMap<String, SkillLabel>,
    markers: PartMap<String, Option<Vec<u8>>>,
    /// Timestamp keys to add (with their value) or remove (`None`).
    timestamps: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The sort values of each summary loaded, as they were before (`None`: none yet).
    before: PartMap<(u8, String), Option<Vec<f64>>>,
    /// Member counts of hubs' and companies' distinct sets, as they will be (0: remove).
    members: PartMap<Vec<u8>, u64>,
    /// Member keys of the sets of workers, present (true) or gone (false).
    presence: PartMap<Vec<u8>, bool>,
}

/// The member counts as a batch sees them: what it changed, else what is stored; for the
/// sets of workers, the worker's own state.
struct TreeMembers<'a> {
    projection: &'a Projection,
    /// The counts recent parts wrote, consulted before sled.
    written: &'a mut Counts,
    members: &'a mut PartMap<Vec<u8>, u64>,
    /// The worker of the contribution being applied, and their state's memberships.
    worker: &'a str,
    memberships: Option<&'a mut crate::summary::DigestCounts>,
    /// Member keys of the sets of workers to add (true) or remove (false).
    presence: &'a mut PartMap<Vec<u8>, bool>,
}

impl Members for TreeMembers<'_> {
    type Error = ProjectionError;

    fn change(
        &mut self,
        set: Set,
        id: &str,
        month: &str,
        member: &str,
        sign: i64,
    ) -> Result<i64, ProjectionError> {
        if sign == 0 {
            // A set counted by finer members whose finer member neither came nor went.
            return Ok(0);
        }
        if set.of_workers() && member == self.worker {
            if let Some(memberships) = self.memberships.as_deref_mut() {
                let change = memberships.step(crate::members::slot(set, id, month), sign);
                if change != 0 && set.listed() {
                    self.presence
                        .insert(crate::members::key(set, id, month, member), change > 0);
                }
                return Ok(change);
            }
        }
        let key = crate::members::key(set, id, month, member);
        let count = match self.members.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let stored = match self.written.get(entry.key()) {
                    Some(count) => *count,
                    None => self.projection.get_u64(entry.key())?,
                };
                entry.insert(stored)
            }
        };
        Ok(crate::members::step(count, sign))
    }
}

/// sled's page cache for the projector's database unless configured
/// (`[memory] projector_cache_mb`; sled's own default is 1 GB). At 32 MiB its lag under
/// ingest (p99 647-785 ms) and its catch-up after a million statements moved within what runs
/// swing at 64 (BENCHMARKS.md, "Seventeenth round").
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

impl Projection {
    pub fn open(path: &Path) -> Result<Projection, ProjectionError> {
        Projection::open_sized(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the database with sled's page cache bounded to `cache_bytes`.
    pub fn open_sized(path: &Path, cache_bytes: u64) -> Result<Projection, ProjectionError> {
        Projection::from_tree(Projection::open_tree(path, cache_bytes)?, path, cache_bytes)
    }

    /// Opens (or creates) the sled database itself, for [`Projection::from_tree`]: a new
    /// replica loads its snapshot into it first, so the database is opened once (sled's
    /// threads may hold its lock for a moment after a drop, and a reopen would be refused).
    /// A database made now runs sled's flusher thread beside it ([`sledconf::CLEANING_MS`]):
    /// not for flushing (each checkpoint is flushed before its acks) but for sled's segment
    /// cleaner. One opened again runs without it ([`sledconf::cleaned_unless_reopened`]): a
    /// restart's (at a million statements its cleaner rewrote the log without end, nothing
    /// sent) and a compaction's copy once written (~2 MB/s while idle).
    pub fn open_tree(path: &Path, cache_bytes: u64) -> Result<sled::Db, ProjectionError> {
        Ok(Projection::tree_config(path, cache_bytes).open()?)
    }

    /// How [`Projection::open_tree`] opens the database at `path`.
    pub(crate) fn tree_config(path: &Path, cache_bytes: u64) -> sled::Config {
        sledconf::cleaned_unless_reopened(path).cache_capacity(cache_bytes)
    }

    /// [`Projection::open_tree`] for a compaction's copy, made in the small segments a copy
    /// takes least in and with sled's segment cleaner running more often while it is written
    /// ([`sledconf::copy`]): reopen it with [`Projection::open_tree_when_free`] once written.
    pub(crate) fn open_copy_tree(
        path: &Path,
        cache_bytes: u64,
    ) -> Result<sled::Db, ProjectionError> {
        Ok(sledconf::copy(path).cache_capacity(cache_bytes).open()?)
    }

    /// [`Projection::open_tree`], waiting up to `wait` for the database's lock: sled's threads
    /// hold it for a moment after the last handle of a database went, and sled offers no way
    /// to wait for it, so the open is tried again every 20 ms.
    pub fn open_tree_when_free(
        path: &Path,
        cache_bytes: u64,
        wait: std::time::Duration,
    ) -> Result<sled::Db, ProjectionError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Projection::open_tree(path, cache_bytes) {
                Err(ProjectionError::Sled(sled::Error::Io(err)))
                    if err.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => return opened,
            }
        }
    }

    /// The projection on an open sled database at `path`: migrations first.
    pub fn from_tree(
        tree: sled::Db,
        path: &Path,
        cache_bytes: u64,
    ) -> Result<Projection, ProjectionError> {
        let mut projection = Projection {
            tree,
            programme: crate::programme::Cache::default(),
            path: path.to_owned(),
            cache_bytes,
            recent: Mutex::new(Recent::new(cache_bytes)),
            one_batch: crate::part::ONE_BATCH,
            sub_batch: crate::part::SUB_BATCH,
            // Filled once the steps below have put the keys in their present form.
            seen: idfilter::IdFilter::unfilled(),
            overlay: crate::overlay::Overlay::default(),
            checkpointing: Mutex::new(()),
            applying: crate::overlay::Applying::default(),
        };
        // First: the journal holds writes made after everything below.
        projection.finish_interrupted_part()?;
        let made_empty = projection.tree.is_empty();
        if !projection.tree.contains_key(MEMBERS_MOVED)? {
            projection.move_members_out()?;
        }
        // Before the memberships move in: that move names its slots by digest already.
        if !projection.tree.contains_key(COUNTED_BY_DIGEST)? {
            projection.digest_worker_counts()?;
        }
        if !projection.tree.contains_key(MEMBERSHIPS_IN_WORKERS)? {
            projection.move_memberships_in()?;
        }
        if !projection.tree.contains_key(COUNTED_BY_FINER)? {
            projection.count_by_finer()?;
        }
        if !projection.tree.contains_key(COUNTED_BY_TIMESTAMPS)? {
            projection.drop_counted_markers()?;
        }
        if !projection.tree.contains_key(order::BUILT)? {
            projection.build_order()?;
        }
        // After the steps above: the memberships and the finer counts are made from keys
        // this one removes.
        if !projection.tree.contains_key(LISTED_MEMBERS_ONLY)? {
            projection.drop_unlisted_members()?;
        }
        if !projection.tree.contains_key(HUB_WORKERS_BY_GROUP)? {
            projection.drop_hub_worker_keys()?;
        }
        // After the markers went: a counted statement is known by its timestamp keys.
        if !projection.tree.contains_key(SHORT_TIMESTAMPS)? {
            projection.shorten_timestamps()?;
        }
        // After they are short: this reads the short keys.
        if !projection.tree.contains_key(SKILLS_IN_TIMESTAMPS)? {
            projection.skills_into_timestamps()?;
        }
        // Last: the steps above may write states, and read them in either form.
        if !projection.tree.contains_key(STATES_PACKED)? {
            projection.repack_states(
                &[WORKER, HUB, COMPANY, PROGRAMME[0]],
                STATES_PACKED,
                "summary states now kept in binary",
            )?;
        }
        if !projection.tree.contains_key(DIGESTS_AS_BYTES)? {
            projection.repack_states(
                &[WORKER],
                DIGESTS_AS_BYTES,
                "workers' states now write their digests as bytes",
            )?;
        }
        if projection.tree.is_empty() || projection.count(WORKER)? == 0 {
            projection.tree.insert(PROGRAMME_KEPT, &[] as &[u8])?;
        }
        if made_empty {
            projection.mark_nothing_erased()?;
        }
        // Only a size: an unreadable programme state is reported where it is read.
        let held = (projection
            .load_programme()
            .map(|programme| programme.statements))
        .unwrap_or_default();
        projection.seen = fill_seen(
            projection.tree.clone(),
            u64::try_from(held).unwrap_or_default(),
        );
        Ok(projection)
    }

    /// Rewrites the summary states of the kinds `kinds` whose bytes are not those written now
    /// (once, then marks the database with `mark`): JSON from before the binary form, or a
    /// worker's state with its digests as text (the binary form's first version). In sled
    /// batches of 20,000, so an interrupted rewrite goes on where it stopped: a state already
    /// in the form written now is left as it is. A state that does not read is left as it was
    /// (and counted in the log): reading it says why, as before.
    fn repack_states(&self, kinds: &[u8], mark: &[u8], done: &str) -> Result<(), ProjectionError> {
        fn repack<T: DeserializeOwned + Serialize>(value: &[u8]) -> Option<Vec<u8>> {
            packed::encode(&packed::decode::<T>(value).ok()?).ok()
        }
        let (mut rewritten, mut unread) = (0u64, 0u64);
        for &kind in kinds {
            self.in_chunks(&[kind], |batch, raw_key, value| {
                if kind == PROGRAMME[0] && raw_key != PROGRAMME {
                    return;
                }
                let bytes = match kind {
                    WORKER => repack::<WorkerState>(value),
                    HUB => repack::<HubState>(value),
                    COMPANY => repack::<CompanyState>(value),
                    _ => repack::<ProgrammeState>(value),
                };
                match bytes {
                    Some(bytes) if bytes != value => {
                        batch.insert(raw_key, bytes);
                        rewritten += 1;
                    }
                    Some(_) => {}
                    None => unread += 1,
                }
            })?;
        }
        if rewritten > 0 || unread > 0 {
            tracing::info!(states = rewritten, unread, "{done}");
        }
        self.migrated(mark)
    }

    /// Turns the timestamp keys of a database from before [`SHORT_TIMESTAMPS`] into the short
    /// ones (once): in sled batches of 20,000, each inserting the short keys and removing the
    /// long ones, so an interrupted turn goes on where it stopped. A key that does not read as
    /// a timestamp key is left as it was (and counted in the log).
    fn shorten_timestamps(&self) -> Result<(), ProjectionError> {
        let (mut shortened_keys, mut unread) = (0u64, 0u64);
        for prefix in [TEXT_TIMESTAMP, TEXT_SKILL_TIMESTAMP] {
            self.in_chunks(&[prefix], |batch, raw_key, _| match shortened(raw_key) {
                Some(short) => {
                    batch.insert(short, &[] as &[u8]);
                    batch.remove(raw_key);
                    shortened_keys += 1;
                }
                None => unread += 1,
            })?;
        }
        if shortened_keys > 0 || unread > 0 {
            tracing::info!(
                keys = shortened_keys,
                unread,
                "timestamp keys shortened (skills by digest, times and ids as bytes)"
            );
        }
        self.migrated(SHORT_TIMESTAMPS)
    }

    /// Moves the skills of a database from before [`SKILLS_IN_TIMESTAMPS`] from their
    /// [`SKILL_TIMESTAMP`] keys into the values of their statements' [`TIMESTAMP`] keys
    /// (once): in sled batches of 20,000, each writing the timestamp keys and removing the
    /// skill keys it moved, so an interrupted move goes on where it stopped (a digest already
    /// in a value is not added again). A skill key that does not read as one, or whose
    /// statement has no timestamp key, is left as it was (and counted in the log).
    fn skills_into_timestamps(&self) -> Result<(), ProjectionError> {
        let (mut moved, mut unread) = (0u64, 0u64);
        // The values written so far, which a chunk's batch holds before sled does: a
        // worker's skill keys come together (a worker's, then the next's), so only the
        // current worker's are kept.
        let mut values: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut worker: Vec<u8> = Vec::new();
        let mut failed = None;
        self.in_chunks(&[SKILL_TIMESTAMP], |batch, raw_key, _| {
            let Some((timestamp, digest)) = timestamp_of_skill_key(raw_key) else {
                unread += 1;
                return;
            };
            let worker_end = timestamp.iter().position(|byte| *byte == 0).unwrap_or(0);
            if timestamp[..=worker_end] != worker[..] {
                values.clear();
                worker = timestamp[..=worker_end].to_vec();
            }
            let value = match values.get_mut(&timestamp) {
                Some(value) => value,
                None => match self.tree.get(&timestamp) {
                    Ok(Some(value)) => values.entry(timestamp.clone()).or_insert(value.to_vec()),
                    Ok(None) => {
                        unread += 1;
                        return;
                    }
                    Err(err) => {
                        failed.get_or_insert(err);
                        return;
                    }
                },
            };
            add_digest(value, &digest);
            batch.insert(timestamp, value.clone());
            batch.remove(raw_key);
            moved += 1;
        })?;
        if let Some(err) = failed {
            return Err(err.into());
        }
        if moved > 0 || unread > 0 {
            tracing::info!(
                keys = moved,
                unread,
                "skills' first-evidence keys moved into their statements' timestamp keys"
            );
        }
        self.migrated(SKILLS_IN_TIMESTAMPS)
    }

    /// Removes the member keys of the sets of workers nothing lists (a database from
    /// before [`crate::members::Set::LISTED`]); their counts are in the workers' states.
    fn drop_unlisted_members(&self) -> Result<(), ProjectionError> {
        let mut removed = 0u64;
        // A hub's workers' keys go once their groups are known to hold them (below).
        let unlisted = Set::OF_WORKERS
            .into_iter()
            .filter(|set| !set.listed() && *set != Set::HubWorkers);
        for set in unlisted {
            removed += self.remove_where(&crate::members::set_prefix(set), |_| true)?;
        }
        if removed > 0 {
            tracing::info!(removed, "member keys nothing lists removed");
        }
        self.migrated(LISTED_MEMBERS_ONLY)
    }

    /// Removes the member keys of hubs' workers (a database from before
    /// [`HUB_WORKERS_BY_GROUP`]): a hub's workers are now those of its learner groups. A key
    /// whose worker is in none of the hub's groups (the groups of a database whose hubs moved
    /// their members out of their states had none) stays, and the database is rebuilt from
    /// `LRS_STORED` ([`Projection::needs_rebuild`]) rather than list the hub without them.
    fn drop_hub_worker_keys(&self) -> Result<(), ProjectionError> {
        let prefix = crate::members::set_prefix(Set::HubWorkers);
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        let mut uncovered = 0u64;
        let mut removed = 0u64;
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        for item in self.tree.scan_prefix(&prefix) {
            let (raw_key, _) = item?;
            let Some((hub, _, worker)) = crate::members::parse(&raw_key) else {
                uncovered += 1;
                continue;
            };
            if !groups.contains_key(hub) {
                let state: HubState = self.load(&key(HUB, hub))?;
                groups.insert(hub.to_owned(), state.groups.into_keys().collect());
            }
            let mut covered = false;
            for group in groups.get(hub).into_iter().flatten() {
                let member = crate::members::key(Set::HubGroupWorkers, hub, group, worker);
                if self.tree.contains_key(member)? {
                    covered = true;
                    break;
                }
            }
            if !covered {
                uncovered += 1;
                continue;
            }
            batch.remove(raw_key);
            (pending, removed) = (pending + 1, removed + 1);
            if pending == 20_000 {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        self.tree.apply_batch(batch)?;
        if uncovered > 0 {
            tracing::warn!(
                uncovered,
                "hubs' workers found in none of their learner groups: the projection is rebuilt"
            );
            self.tree.remove(PROGRAMME_KEPT)?;
        }
        if removed > 0 {
            tracing::info!(removed, "hubs' own member keys of their workers removed");
        }
        self.migrated(HUB_WORKERS_BY_GROUP)
    }

    /// Moves the members of the hubs' and companies' distinct counts of a database made
    /// before member keys out of their states (once).
    fn move_members_out(&self) -> Result<(), ProjectionError> {
        for kind in [HUB, COMPANY] {
            let mut batch = sled::Batch::default();
            for item in self.tree.scan_prefix([kind]) {
                let (raw_key, value) = item?;
                let id = String::from_utf8_lossy(&raw_key[1..]).into_owned();
                let corrupt = |reason: String| ProjectionError::Corrupt {
                    key: raw_key.to_vec(),
                    reason,
                };
                let (state, members) = if kind == HUB {
                    if packed::decode::<HubState>(&value).is_ok() {
                        continue;
                    }
                    let (state, members) = crate::summary::legacy::hub(
                        &id,
                        serde_json::from_slice(&value).map_err(|err| corrupt(err.to_string()))?,
                    );
                    (packed::encode(&state), members)
                } else {
                    if packed::decode::<CompanyState>(&value).is_ok() {
                        continue;
                    }
                    let (state, members) = crate::summary::legacy::company(
                        &id,
                        serde_json::from_slice(&value).map_err(|err| corrupt(err.to_string()))?,
                    );
                    (packed::encode(&state), members)
                };
                batch.insert(raw_key.clone(), state.map_err(corrupt)?);
                for (member, count) in members {
                    batch.insert(member, &count.to_be_bytes());
                }
            }
            self.tree.apply_batch(batch)?;
        }
        self.migrated(MEMBERS_MOVED)
    }

    /// Names what the workers' states of a database made before the digests only count by
    /// digests (once). In sled batches of 10,000 states; a name already digested stays as it
    /// is, so an interrupted run resumes.
    fn digest_worker_counts(&self) -> Result<(), ProjectionError> {
        const CHUNK: usize = 10_000;
        let mut batch = sled::Batch::default();
        let (mut pending, mut changed) = (0, 0u64);
        for item in self.tree.scan_prefix([WORKER]) {
            let (raw_key, value) = item?;
            let corrupt = |reason: String| ProjectionError::Corrupt {
                key: raw_key.to_vec(),
                reason,
            };
            let mut state: WorkerState = packed::decode(&value).map_err(corrupt)?;
            if !state.digest_counted() {
                continue;
            }
            batch.insert(raw_key.clone(), packed::encode(&state).map_err(corrupt)?);
            (pending, changed) = (pending + 1, changed + 1);
            if pending == CHUNK {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        self.tree.apply_batch(batch)?;
        if changed > 0 {
            tracing::info!(
                workers = changed,
                "workers' states now name what they only count by digests"
            );
        }
        self.migrated(COUNTED_BY_DIGEST)
    }

    /// Moves the counts of the sets of workers from their member keys into the workers' states
    /// (once; a database made before [`Set::OF_WORKERS`]). In chunks, each one sled batch;
    /// a key already moved has an empty value, so an interrupted move resumes.
    fn move_memberships_in(&self) -> Result<(), ProjectionError> {
        const CHUNK: usize = 20_000;
        for set in Set::OF_WORKERS {
            let prefix = crate::members::set_prefix(set);
            let end = order::prefix_end(&prefix);
            let mut start = prefix.clone();
            loop {
                let mut moved: Vec<sled::IVec> = Vec::new();
                let mut counts: HashMap<String, Vec<(crate::members::Digest, u64)>> =
                    HashMap::new();
                let mut last = None;
                for item in self.tree.range(start.clone()..end.clone()).take(CHUNK) {
                    let (raw_key, value) = item?;
                    last = Some(raw_key.clone());
                    let Ok(count) = <[u8; 8]>::try_from(value.as_ref()).map(u64::from_be_bytes)
                    else {
                        continue;
                    };
                    let Some((id, qualifier, worker)) = crate::members::parse(&raw_key) else {
                        continue;
                    };
                    counts
                        .entry(worker.to_owned())
                        .or_default()
                        .push((crate::members::slot(set, id, qualifier), count));
                    moved.push(raw_key);
                }
                let Some(last) = last else {
                    break;
                };
                let mut batch = sled::Batch::default();
                for (worker, slots) in counts {
                    let state_key = key(WORKER, &worker);
                    let mut state: WorkerState = self.load(&state_key)?;
                    for (slot, count) in slots {
                        state.memberships.set(slot, count);
                    }
                    let bytes =
                        packed::encode(&state).map_err(|reason| ProjectionError::Corrupt {
                            key: state_key.clone(),
                            reason,
                        })?;
                    batch.insert(state_key, bytes);
                }
                for member in moved {
                    batch.insert(member, &[] as &[u8]);
                }
                self.tree.apply_batch(batch)?;
                start = last.to_vec();
                start.push(0);
            }
        }
        self.migrated(MEMBERSHIPS_IN_WORKERS)
    }

    /// Counts the members of the sets of [`Set::COUNTED_BY_FINER`] by their finer members, as
    /// the statements applied from now on do, and removes the programme's companies per month
    /// (once; a database made before). Only member keys change: the distinct counts in the
    /// states stay. A member the finer set does not know (a database older than that set)
    /// stays counted once. Computed from the finer sets alone, so an interrupted run is
    /// simply done again.
    fn count_by_finer(&self) -> Result<(), ProjectionError> {
        const CHUNK: usize = 20_000;
        let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
        for (coarser, finer) in Set::COUNTED_BY_FINER {
            for item in self
                .tree
                .scan_prefix(crate::members::set_prefix(finer))
                .keys()
            {
                let raw = item?;
                if let Some((id, qualifier, _)) = crate::members::parse(&raw) {
                    *counts
                        .entry(crate::members::key(coarser, id, "", qualifier))
                        .or_default() += 1;
                }
            }
            for item in self
                .tree
                .scan_prefix(crate::members::set_prefix(coarser))
                .keys()
            {
                counts.entry(item?.to_vec()).or_insert(1);
            }
        }
        let counted = counts.len();
        let mut batch = sled::Batch::default();
        for (number, (member, count)) in counts.into_iter().enumerate() {
            batch.insert(member, &count.to_be_bytes());
            if (number + 1) % CHUNK == 0 {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        self.tree.apply_batch(batch)?;
        let turned = crate::members::set_prefix(Set::ProgrammeMonthCompanies);
        self.remove_where(&turned, |_| true)?;
        if counted > 0 {
            tracing::info!(
                members = counted,
                "hubs' and the programme's companies are counted by their months, companies' skills by their workers"
            );
        }
        self.migrated(COUNTED_BY_FINER)
    }

    /// Removes the `c` markers of a database made before counted statements went without
    /// (once): every counted statement with contributions has its timestamp keys, and one
    /// without contributions counts nothing, so what each event does stays the same.
    fn drop_counted_markers(&self) -> Result<(), ProjectionError> {
        let removed = self.remove_where(&[MARKER], |value| value == COUNTED)?;
        if removed > 0 {
            tracing::info!(
                markers = removed,
                "counted statements are known by their timestamp keys; their markers removed"
            );
        }
        self.migrated(COUNTED_BY_TIMESTAMPS)
    }

    /// Marks a migration done, on disk before anything is applied after it.
    fn migrated(&self, mark: &[u8]) -> Result<(), ProjectionError> {
        self.tree.insert(mark, &[] as &[u8])?;
        self.tree.flush()?;
        Ok(())
    }

    /// Removes the keys under `prefix` whose value `remove` picks, in sled batches of 20,000;
    /// how many went.
    fn remove_where(
        &self,
        prefix: &[u8],
        remove: impl Fn(&[u8]) -> bool,
    ) -> Result<u64, ProjectionError> {
        let mut removed = 0;
        self.in_chunks(prefix, |batch, raw_key, value| {
            if remove(value) {
                batch.remove(raw_key);
                removed += 1;
            }
        })?;
        Ok(removed)
    }

    /// Walks the keys under `prefix` in chunks of 20,000: `each` puts what it changes for a
    /// key into its chunk's sled batch, applied before the next chunk is read, so a walk cut
    /// short between two chunks goes on where it stopped when walked again.
    fn in_chunks(
        &self,
        prefix: &[u8],
        mut each: impl FnMut(&mut sled::Batch, &[u8], &[u8]),
    ) -> Result<(), ProjectionError> {
        const CHUNK: usize = 20_000;
        let end = order::prefix_end(prefix);
        let mut start = prefix.to_vec();
        loop {
            let mut batch = sled::Batch::default();
            let mut last = None;
            for item in self.tree.range(start.clone()..end.clone()).take(CHUNK) {
                let (raw_key, value) = item?;
                each(&mut batch, &raw_key, &value);
                last = Some(raw_key);
            }
            let Some(last) = last else {
                return Ok(());
            };
            self.tree.apply_batch(batch)?;
            start = last.to_vec();
            start.push(0);
        }
    }

    /// Gives a database made before the order keys its order keys and counts (once).
    fn build_order(&self) -> Result<(), ProjectionError> {
        for kind in [WORKER, HUB, COMPANY] {
            let mut count = 0u64;
            let mut batch = Part::default();
            for item in self.tree.scan_prefix([kind]) {
                let (raw_key, value) = item?;
                let id = String::from_utf8_lossy(&raw_key[1..]).into_owned();
                let corrupt = |reason: String| ProjectionError::Corrupt {
                    key: raw_key.to_vec(),
                    reason,
                };
                let values = match kind {
                    WORKER => packed::decode::<WorkerState>(&value)
                        .map_err(corrupt)?
                        .sort_values(),
                    HUB => packed::decode::<HubState>(&value)
                        .map_err(corrupt)?
                        .sort_values(),
                    _ => packed::decode::<CompanyState>(&value)
                        .map_err(corrupt)?
                        .sort_values(),
                };
                order::update(&mut batch, kind, &id, None, Some(&values), None);
                count += 1;
            }
            batch.insert(order::count_key(kind), count.to_be_bytes());
            batch.apply(&self.tree, self.one_batch, self.sub_batch)?;
        }
        self.migrated(order::BUILT)
    }

    /// Whether this database was made before the programme figures were kept: its summaries
    /// are right, but the programme's figures and the companies' months start only with what
    /// it applies now. The projector service rebuilds such a database once, at start.
    pub fn needs_rebuild(&self) -> Result<bool, ProjectionError> {
        Ok(!self.tree.contains_key(PROGRAMME_KEPT)?)
    }

    /// Marks a database whose every figure was computed from all statements (a rebuild).
    pub fn mark_complete(&self) -> Result<(), ProjectionError> {
        self.tree.insert(PROGRAMME_KEPT, &[] as &[u8])?;
        Ok(())
    }

    /// How many summaries of a kind exist.
    fn count(&self, kind: u8) -> Result<u64, ProjectionError> {
        Ok(self.get_u64(&order::count_key(kind))?)
    }

    /// What `key` holds: the overlay's word if it has one ([`crate::overlay`]), else sled's.
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, sled::Error> {
        match self.overlay.get(key) {
            Some(said) => Ok(said),
            None => self.tree.get(key),
        }
    }

    fn contains(&self, key: &[u8]) -> Result<bool, sled::Error> {
        Ok(self.get(key)?.is_some())
    }

    /// A big-endian u64 under `key` (see [`stored_u64`]), the overlay's first.
    fn get_u64(&self, key: &[u8]) -> Result<u64, sled::Error> {
        Ok(self
            .get(key)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// The entries within the bounds, the overlay's over sled's, last first when `reverse`.
    pub(crate) fn scan(
        &self,
        lower: std::ops::Bound<Vec<u8>>,
        upper: std::ops::Bound<Vec<u8>>,
        reverse: bool,
    ) -> crate::overlay::Scan {
        use crate::overlay::bound_ref;
        let over = self.overlay.range(bound_ref(&lower), bound_ref(&upper));
        crate::overlay::Scan::new(self.tree.range((lower, upper)), over, reverse)
    }

    /// The entries whose keys start with `prefix` (see [`Projection::scan`]).
    pub(crate) fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        reverse: bool,
    ) -> crate::overlay::Scan {
        let prefix = prefix.as_ref();
        let upper = match prefix.iter().rposition(|byte| *byte < u8::MAX) {
            Some(at) => {
                let mut end = prefix[..=at].to_vec();
                end[at] += 1;
                std::ops::Bound::Excluded(end)
            }
            None => std::ops::Bound::Unbounded,
        };
        self.scan(std::ops::Bound::Included(prefix.to_vec()), upper, reverse)
    }

    /// A part of more than `writes` writes is journaled and applied in sled batches of
    /// `writes` (by default: more than [`crate::part::ONE_BATCH`], in batches of
    /// [`crate::part::SUB_BATCH`]).
    pub fn with_sub_batch(mut self, writes: usize) -> Projection {
        self.one_batch = writes.max(1);
        self.sub_batch = writes.max(1);
        self
    }

    /// Waits until the filter of marked statements holds every one marked at open; false if
    /// its fill failed.
    #[cfg(test)]
    pub(crate) fn seen_filled(&self) -> bool {
        self.seen.wait_filled()
    }

    /// Finishes a part cut short after its journal ([`crate::part`]); whether there was one.
    fn finish_interrupted_part(&self) -> Result<bool, ProjectionError> {
        let Some(writes) = crate::part::finish_interrupted(&self.tree, self.sub_batch)? else {
            return Ok(false);
        };
        tracing::warn!(writes, "a part cut short was finished from its journal");
        Ok(true)
    }

    /// Writes what waits behind ([`Projection::checkpoint`]) and flushes sled.
    pub fn flush(&self) -> Result<(), ProjectionError> {
        self.checkpoint()?;
        self.tree.flush()?;
        Ok(())
    }

    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes over another database's position in `LRS_STORED` (after a rebuild).
    pub fn set_applied(&self, sequence: u64) -> Result<(), ProjectionError> {
        self.tree.insert(META_APPLIED, &sequence.to_be_bytes())?;
        Ok(())
    }

    /// The highest `LRS_STORED` sequence applied (visible to reads; in sled after the next
    /// checkpoint when written behind).
    pub fn applied(&self) -> Result<u64, ProjectionError> {
        Ok(self.get_u64(META_APPLIED)?)
    }

    /// Bytes the database takes on disk, if sled can say.
    pub fn size_on_disk(&self) -> Option<u64> {
        self.tree.size_on_disk().ok()
    }

    /// The sled database itself, for a compaction's copy ([`crate::compact`]).
    pub(crate) fn db(&self) -> &sled::Db {
        &self.tree
    }

    /// Notes the bytes this database took on disk when it was made as a copy.
    pub fn set_copied(&self, bytes: u64) -> Result<(), ProjectionError> {
        self.tree.insert(META_COPIED, &bytes.to_be_bytes())?;
        Ok(())
    }

    /// How many parts applied an erasure ([`ERASURES`]; those applied behind included).
    pub fn erasures(&self) -> Result<u64, ProjectionError> {
        Ok(self.get_u64(ERASURES)?)
    }

    /// Whether no page of this database holds bytes of an erased statement: nothing erased
    /// since it was made empty or copied ([`SCRUBBED_AT`]).
    pub fn nothing_erased(&self) -> Result<bool, ProjectionError> {
        let erasures = self.erasures()?.to_be_bytes();
        Ok(self.get(SCRUBBED_AT)?.is_some_and(|at| *at == erasures))
    }

    /// Notes that no page of this database holds bytes of an erased statement: made empty, or
    /// a copy made while nothing was erased.
    pub fn mark_nothing_erased(&self) -> Result<(), ProjectionError> {
        let erasures = self.erasures()?;
        self.tree.insert(SCRUBBED_AT, &erasures.to_be_bytes())?;
        Ok(())
    }

    /// The bytes this database took on disk when it was made as a copy (0: never copied).
    pub fn copied(&self) -> Result<u64, ProjectionError> {
        Ok(stored_u64(&self.tree, META_COPIED)?)
    }

    /// Writes the whole database to a snapshot file (between batches, so it is at one
    /// sequence): the applied sequence and the number of entries.
    pub fn write_snapshot(&self, file: &Path) -> Result<(u64, u64), String> {
        self.checkpoint().map_err(|err| err.to_string())?;
        let applied = self.applied().map_err(|err| err.to_string())?;
        let written =
            bus::snapshot::write_file(file, self.tree.iter()).map_err(|err| err.to_string())?;
        Ok((applied, written))
    }

    /// Loads a snapshot file into `tree`, a new database at `path` (which must be empty).
    pub fn load_snapshot(tree: &sled::Db, path: &Path, file: &Path) -> Result<u64, String> {
        if !tree.is_empty() {
            return Err(format!(
                "{} holds a database already: a replica starts from a snapshot only with an empty data folder",
                path.display()
            ));
        }
        let entries = bus::snapshot::read_file(file, |chunk| {
            let mut batch = sled::Batch::default();
            for (key, value) in chunk {
                batch.insert(key, value);
            }
            tree.apply_batch(batch)
        })
        .map_err(|err| err.to_string())?;
        tree.flush().map_err(|err| err.to_string())?;
        Ok(entries)
    }

    /// The digest of the summaries (with the markers and timestamps, skills included, they
    /// are made from and the applied sequence; not the parked messages): equal on
    /// projector replicas that applied `LRS_STORED` through the same sequence. Returns the
    /// applied sequence, the number of summaries and the digest (XXH3-128, hex).
    pub fn digest(&self) -> Result<(u64, u64, String), ProjectionError> {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut summaries = 0;
        let applied = self.applied()?;
        hasher.update(&applied.to_be_bytes());
        for prefix in [
            MARKER,
            WORKER,
            HUB,
            COMPANY,
            TIMESTAMP,
            crate::members::MEMBER,
            PROGRAMME[0],
            SKILL_LABEL,
        ] {
            for item in self.scan_prefix([prefix], false) {
                let (key, value) = item?;
                if matches!(prefix, WORKER | HUB | COMPANY) {
                    summaries += 1;
                }
                for part in [&key, &value] {
                    hasher.update(&(part.len() as u64).to_be_bytes());
                    hasher.update(part);
                }
            }
        }
        Ok((applied, summaries, format!("{:032x}", hasher.digest128())))
    }

    fn load<T: DeserializeOwned + Default>(&self, key: &[u8]) -> Result<T, ProjectionError> {
        match self.get(key)? {
            None => Ok(T::default()),
            Some(bytes) => packed::decode(&bytes).map_err(|reason| ProjectionError::Corrupt {
                key: key.to_vec(),
                reason,
            }),
        }
    }

    /// Applies one `LRS_STORED` message (stream sequence `sequence`) as one part with the
    /// sequence itself; applying a message again changes nothing (per-statement markers).
    pub fn apply(&self, sequence: u64, message: &StoredEvents) -> Result<(), ProjectionError> {
        self.apply_all(&[(sequence, message)])
    }

    /// Applies several `LRS_STORED` messages as one part (one sled batch, or a journal and
    /// batches of a bounded size: [`crate::part`]): each summary they touch is
    /// read and written once, not once per message. Every event is idempotent (the
    /// per-statement marker), so a redelivered message, even one that comes back after later
    /// ones, changes nothing twice; the highest sequence seen is kept for rebuilds.
    pub fn apply_all(&self, messages: &[(u64, &StoredEvents)]) -> Result<(), ProjectionError> {
        let effects: Vec<(u64, Vec<Effect>)> = messages
            .iter()
            .map(|(sequence, message)| (*sequence, effects(message)))
            .collect();
        self.apply_effects(&effects)
    }

    /// [`Projection::apply_all`] on messages already reduced to their [`Effect`]s (what the
    /// service holds between decoding a message and applying its part of a pull).
    pub fn apply_effects(&self, messages: &[(u64, Vec<Effect>)]) -> Result<(), ProjectionError> {
        self.apply_part(messages, false)
    }

    /// [`Projection::apply_effects`], written behind ([`crate::overlay`]): the part is read at
    /// once and reaches sled at the next [`Projection::checkpoint`].
    pub fn apply_behind(&self, messages: &[(u64, Vec<Effect>)]) -> Result<(), ProjectionError> {
        let _applying = self.applying.begin();
        self.apply_part(messages, true)
    }

    /// Writes what was applied behind to sled, as one part, and flushes; returns how many
    /// writes. Once it returns, sled holds everything applied before it was called. One
    /// checkpoint at a time; reads go on meanwhile (the frozen layer answers them).
    pub fn checkpoint(&self) -> Result<usize, ProjectionError> {
        let _one = self
            .checkpointing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut written = 0;
        // A layer a failed checkpoint left frozen first; then what is active now.
        while let Some((frozen, leftover)) = self.overlay.freeze() {
            crate::part::apply_writes(
                &self.tree,
                &frozen,
                self.one_batch,
                self.sub_batch,
                &|| self.applying.wait_for_none(),
            )?;
            self.tree.flush()?;
            self.overlay.written();
            written += frozen.len();
            if !leftover {
                break;
            }
        }
        Ok(written)
    }

    /// Bytes of keys and values applied behind since the last checkpoint began.
    pub fn behind_bytes(&self) -> usize {
        self.overlay.active_bytes()
    }

    /// Whether anything applied behind is not yet in sled.
    pub fn is_behind(&self) -> bool {
        !self.overlay.is_empty()
    }

    fn apply_part(
        &self,
        messages: &[(u64, Vec<Effect>)],
        behind: bool,
    ) -> Result<(), ProjectionError> {
        // Written through only when nothing waits behind (else the overlay would hide it),
        // and never beside a checkpoint.
        let through = (!behind)
            .then(|| {
                self.checkpointing
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            })
            .filter(|_| self.overlay.is_empty());
        let mut recent = self.recent.lock().unwrap_or_else(|poisoned| {
            // A part that panicked may have left what sled did not take: forget it all.
            let mut recent = poisoned.into_inner();
            recent.clear();
            recent
        });
        self.recent.clear_poison();
        if through.is_some() && self.finish_interrupted_part()? {
            // What a part cut short wrote is in sled, not here.
            recent.clear();
        }
        // Which active layer the part goes to, if behind (a freeze may yet come between).
        let generation = through.is_none().then(|| self.overlay.generation());
        if recent.generation != generation {
            recent.beneath.clear();
            recent.generation = generation;
        }
        let mut touched = Touched::default();
        let mut last = self.applied()?;
        for (sequence, effects) in messages {
            last = last.max(*sequence);
            self.collect(&mut touched, effects, &mut recent)?;
        }
        self.write(touched, last, &mut recent)
    }

    fn collect(
        &self,
        touched: &mut Touched,
        effects: &[Effect],
        recent: &mut Recent,
    ) -> Result<(), ProjectionError> {
        for effect in effects {
            let id = effect.id.as_str();
            // What the filter of marked statements knows it by (see [`Projection::seen`]).
            let uuid = uuid::Uuid::parse_str(id).ok();
            if effect.kind == EventKind::Stored {
                // Whether or not the statement counts (a void may come first on one replica
                // and last on another): the name is the skill's, not the statement's.
                for (skill, name) in &effect.labels {
                    let label = SkillLabel {
                        stored: effect.stored.clone(),
                        id: effect.id.clone(),
                        name: name.clone(),
                    };
                    if touched
                        .labels
                        .get(skill)
                        .is_none_or(|kept| kept.rank() < label.rank())
                    {
                        touched.labels.insert(skill.clone(), label);
                    }
                }
            }
            let marker = match touched.markers.get(id) {
                Some(marker) => marker.clone(),
                None => self.marker(effect, uuid.as_ref())?,
            };
            let (sign, next) = match (effect.kind, marker.as_deref()) {
                (EventKind::Stored, None) => (1, COUNTED),
                (EventKind::Voided, Some(COUNTED)) => (-1, VOIDED),
                (EventKind::Voided, None) => (0, VOIDED),
                (EventKind::Erased, Some(COUNTED)) => (-1, ERASED),
                (EventKind::Erased, Some(VOIDED) | None) => (0, ERASED),
                _ => continue,
            };
            if let Some(uuid) = &uuid {
                self.seen.note(uuid.as_bytes());
            }
            touched.markers.insert(id.to_owned(), Some(next.to_vec()));
            if sign != 0 {
                for contribution in &effect.contributions {
                    touched.timestamps.push((
                        timestamp_key(contribution, id),
                        (sign > 0).then(|| skill_digests(contribution)),
                    ));
                    self.add(touched, contribution, sign, recent)?;
                }
            }
        }
        Ok(())
    }

    /// What a statement's [`MARKER`] says, or `c` when its timestamp keys say it counts;
    /// `None` at once when the filter of marked statements knows its `uuid` is not marked.
    fn marker(
        &self,
        effect: &Effect,
        uuid: Option<&uuid::Uuid>,
    ) -> Result<Option<Vec<u8>>, ProjectionError> {
        if uuid.is_some_and(|uuid| !self.seen.may_hold(uuid.as_bytes())) {
            return Ok(None);
        }
        if let Some(marker) = self.get(&key(MARKER, &effect.id))? {
            return Ok(Some(marker.to_vec()));
        }
        Ok(match effect.contributions.first() {
            Some(first) if self.contains(&timestamp_key(first, &effect.id))? => {
                Some(COUNTED.to_vec())
            }
            _ => None,
        })
    }

    fn write(
        &self,
        touched: Touched,
        sequence: u64,
        recent: &mut Recent,
    ) -> Result<(), ProjectionError> {
        let behind = recent.generation;
        let mut batch = Part::default();
        if touched
            .markers
            .values()
            .any(|marker| marker.as_deref() == Some(ERASED))
        {
            // Its bytes stay in sled's old pages until a compaction's copy.
            let erasures = self.get_u64(ERASURES)?.saturating_add(1);
            batch.insert(ERASURES, erasures.to_be_bytes());
        }
        for (id, marker) in touched.markers {
            // A counted statement is known by its timestamp keys (and one without
            // contributions counts nothing).
            if let Some(marker) = marker.filter(|marker| marker != COUNTED) {
                batch.insert(key(MARKER, &id), marker);
            }
        }
        for (timestamp, skills) in touched.timestamps {
            match skills {
                Some(skills) => batch.insert(timestamp, skills),
                None => batch.remove(timestamp),
            }
        }
        for (member, count) in &touched.members {
            if *count == 0 {
                batch.remove(member.as_slice());
            } else {
                batch.insert(member.as_slice(), count.to_be_bytes());
            }
        }
        for (member, present) in &touched.presence {
            if *present {
                batch.insert(member.as_slice(), &[] as &[u8]);
            } else {
                batch.remove(member.as_slice());
            }
        }
        for (skill, label) in &touched.labels {
            let key = key(SKILL_LABEL, skill);
            let kept = self.get(&key)?;
            if kept
                .as_deref()
                .and_then(SkillLabel::read)
                .is_some_and(|kept| kept.rank() >= label.rank())
            {
                continue;
            }
            let bytes = serde_json::to_vec(label).map_err(|err| ProjectionError::Corrupt {
                key: key.clone(),
                reason: err.to_string(),
            })?;
            batch.insert(key, bytes);
        }
        if let Some(programme) = &touched.programme {
            let bytes = packed::encode(programme).map_err(|reason| ProjectionError::Corrupt {
                key: PROGRAMME.to_vec(),
                reason,
            })?;
            batch.insert(PROGRAMME, bytes);
        }
        let before = &touched.before;
        let mut beneath = behind.map(|_| &mut recent.beneath);
        let counts = [
            (
                WORKER,
                write_states(
                    &mut batch,
                    WORKER,
                    &touched.workers,
                    (before, beneath.as_deref_mut()),
                    |state: &WorkerState| (!state.is_empty()).then(|| state.sort_values()),
                )?,
            ),
            (
                HUB,
                write_states(
                    &mut batch,
                    HUB,
                    &touched.hubs,
                    (before, beneath.as_deref_mut()),
                    |state: &HubState| (!state.is_empty()).then(|| state.sort_values()),
                )?,
            ),
            (
                COMPANY,
                write_states(
                    &mut batch,
                    COMPANY,
                    &touched.companies,
                    (before, beneath),
                    |state: &CompanyState| (!state.is_empty()).then(|| state.sort_values()),
                )?,
            ),
        ];
        for (kind, change) in counts {
            if change != 0 {
                let count = self.count(kind)?.saturating_add_signed(change);
                batch.insert(order::count_key(kind), count.to_be_bytes());
            }
        }
        batch.insert(META_APPLIED, sequence.to_be_bytes());
        if let Some(generation) = behind {
            let (writes, keys) = batch.into_layer();
            let forgets = crate::overlay::Forgets { keys, generation };
            self.overlay.merge(writes, forgets);
        } else {
            batch.apply(&self.tree, self.one_batch, self.sub_batch)?;
        }
        // Only now, with sled or the overlay holding them: a batch refused leaves what is
        // kept as it was (the states it took out stay out, and are read again).
        for (member, count) in touched.members {
            recent.counts.put(member, count);
        }
        for member in touched.presence.keys() {
            // A presence key holds no count; never answer one from here.
            recent.counts.pop(member);
        }
        for (worker, state) in touched.workers {
            recent.workers.put(worker, state);
        }
        for (hub, state) in touched.hubs {
            recent.hubs.put(hub, state);
        }
        for (company, state) in touched.companies {
            recent.companies.put(company, state);
        }
        if touched.programme.is_some() {
            recent.programme = touched.programme;
        }
        Ok(())
    }

    fn add(
        &self,
        touched: &mut Touched,
        contribution: &Contribution,
        sign: i64,
        recent: &mut Recent,
    ) -> Result<(), ProjectionError> {
        let worker = &contribution.worker;
        if !touched.workers.contains_key(worker) {
            let state: WorkerState = match recent.workers.pop(worker) {
                Some(state) => state,
                None => self.load(&key(WORKER, worker))?,
            };
            touched.before.insert(
                (WORKER, worker.clone()),
                (!state.is_empty()).then(|| state.sort_values()),
            );
            touched.workers.insert(worker.clone(), state);
        }
        let Touched {
            workers,
            hubs,
            companies,
            programme,
            before,
            members,
            presence,
            ..
        } = touched;
        let worker_state = workers.get_mut(worker);
        let mut memberships = worker_state.map(|state| {
            state.apply(contribution, sign);
            &mut state.memberships
        });
        // The member counts each summary's apply sees (a fresh borrow each time).
        macro_rules! tree_members {
            () => {
                TreeMembers {
                    projection: self,
                    written: &mut recent.counts,
                    members: &mut *members,
                    worker,
                    memberships: memberships.as_deref_mut(),
                    presence: &mut *presence,
                }
            };
        }
        if programme.is_none() {
            *programme = Some(match recent.programme.take() {
                Some(state) => state,
                None => self.load(PROGRAMME)?,
            });
        }
        if let Some(programme) = programme.as_mut() {
            programme.apply(contribution, sign, &mut tree_members!())?;
        }
        if let Some(hub) = &contribution.hub {
            if !hubs.contains_key(hub) {
                let state: HubState = match recent.hubs.pop(hub) {
                    Some(state) => state,
                    None => self.load(&key(HUB, hub))?,
                };
                before.insert(
                    (HUB, hub.clone()),
                    (!state.is_empty()).then(|| state.sort_values()),
                );
                hubs.insert(hub.clone(), state);
            }
            if let Some(state) = hubs.get_mut(hub) {
                state.apply(hub, contribution, sign, &mut tree_members!())?;
            }
        }
        if let Some(company) = &contribution.company {
            if !companies.contains_key(company) {
                let state: CompanyState = match recent.companies.pop(company) {
                    Some(state) => state,
                    None => self.load(&key(COMPANY, company))?,
                };
                before.insert(
                    (COMPANY, company.clone()),
                    (!state.is_empty()).then(|| state.sort_values()),
                );
                companies.insert(company.clone(), state);
            }
            if let Some(state) = companies.get_mut(company) {
                state.apply(company, contribution, sign, &mut tree_members!())?;
            }
        }
        Ok(())
    }

    /// Keeps a message that could not be read, with the reason (flushed with the next batch).
    pub fn park(&self, sequence: u64, reason: &str, payload: &[u8]) -> Result<(), ProjectionError> {
        let parked = Parked {
            sequence,
            reason: reason.to_owned(),
            payload: String::from_utf8_lossy(payload).into_owned(),
        };
        let bytes = serde_json::to_vec(&parked).map_err(|err| ProjectionError::Corrupt {
            key: parked_key(sequence),
            reason: err.to_string(),
        })?;
        self.tree.insert(parked_key(sequence), bytes)?;
        Ok(())
    }

    /// Every parked message, oldest first.
    pub fn parked(&self) -> Result<Vec<Parked>, ProjectionError> {
        let mut found = Vec::new();
        for item in self.tree.scan_prefix([PARKED]) {
            let (key, value) = item?;
            found.push(
                serde_json::from_slice(&value).map_err(|err| ProjectionError::Corrupt {
                    key: key.to_vec(),
                    reason: err.to_string(),
                })?,
            );
        }
        Ok(found)
    }

    /// Applies every parked message that can now be read (a newer projector may understand
    /// what an older one did not) and forgets it; the rest stay. Returns (applied, still parked).
    pub fn replay_parked(&self) -> Result<(usize, usize), ProjectionError> {
        let mut applied = 0;
        let mut left = 0;
        for parked in self.parked()? {
            match crate::events::decode(parked.payload.as_bytes()) {
                Ok(events) => {
                    self.apply(parked.sequence, &events)?;
                    self.tree.remove(parked_key(parked.sequence))?;
                    applied += 1;
                }
                Err(_) => left += 1,
            }
        }
        self.flush()?;
        Ok((applied, left))
    }

    /// Gives every skill in a summary the name the statements' contexts gave it, if any.
    pub fn label_skills(&self, value: &mut Value) {
        // A hub's months name the same few skills many times: each is read once.
        let known = std::cell::RefCell::new(HashMap::<String, Option<Value>>::new());
        xapi::llo::label_skills(value, &|skill| {
            if let Some(label) = known.borrow().get(skill) {
                return label.clone();
            }
            let label = self
                .get(&key(SKILL_LABEL, skill))
                .ok()
                .flatten()
                .and_then(|bytes| SkillLabel::read(&bytes))
                .map(|label| label.name);
            known.borrow_mut().insert(skill.to_owned(), label.clone());
            label
        });
    }

    pub(crate) fn load_programme(&self) -> Result<ProgrammeState, ProjectionError> {
        self.load(PROGRAMME)
    }

    /// Every hub's state, by id (hubs are few: the programme has tens, not thousands).
    pub(crate) fn hub_states(&self) -> Result<Vec<(String, HubState)>, ProjectionError> {
        let mut found = Vec::new();
        for item in self.scan_prefix([HUB], false) {
            let (raw_key, value) = item?;
            let state: HubState =
                packed::decode(&value).map_err(|reason| ProjectionError::Corrupt {
                    key: raw_key.to_vec(),
                    reason,
                })?;
            found.push((String::from_utf8_lossy(&raw_key[1..]).into_owned(), state));
        }
        Ok(found)
    }

    /// The programme summary against `target` companies, with the hub registry `hubs`.
    pub fn programme(
        self: &std::sync::Arc<Self>,
        hubs: &[bus::hubs::HubEntry],
        target: u64,
    ) -> Result<Value, ProjectionError> {
        crate::programme::get(self, hubs, target)
    }

    pub fn worker(
        &self,
        worker: &str,
        months: &MonthRange,
    ) -> Result<Option<Value>, ProjectionError> {
        let state: WorkerState = self.load(&key(WORKER, worker))?;
        if state.is_empty() {
            return Ok(None);
        }
        let prefix = timestamp_prefix(worker);
        let timestamp_of =
            |item: Option<sled::Result<sled::IVec>>| -> Result<Option<String>, ProjectionError> {
                let Some(item) = item else {
                    return Ok(None);
                };
                Ok(timestamp_at(&item?, prefix.len()))
            };
        let first = timestamp_of(self.scan_prefix(&prefix, false).keys().next())?;
        let last =
            timestamp_of(self.scan_prefix(&prefix, true).keys().next())?.or_else(|| first.clone());
        let mut view = state.view(worker, months, first, last);
        // When each skill was first evidenced: the first timestamp key that names it (a walk
        // of the worker's statements in time, until every skill the state holds is found).
        let mut firsts: Vec<([u8; 16], Option<String>)> = state
            .skills
            .keys()
            .map(|skill| (crate::members::digest_bytes(skill), None))
            .collect();
        let mut missing = firsts.len();
        let mut range = self.scan_prefix(&prefix, false);
        while missing > 0 {
            let Some(item) = range.next() else {
                break;
            };
            let (raw, skills) = item?;
            for digest in skills.chunks_exact(16) {
                if let Some((_, first @ None)) =
                    firsts.iter_mut().find(|(wanted, _)| wanted == digest)
                {
                    *first = timestamp_at(&raw, prefix.len());
                    missing -= 1;
                }
            }
        }
        let skills_first: Vec<Value> = state
            .skills
            .keys()
            .zip(firsts)
            .map(|(skill, (_, first))| serde_json::json!({"skill": skill, "first": first}))
            .collect();
        if let Some(object) = view.as_object_mut() {
            object.insert("skills_first".into(), Value::Array(skills_first));
        }
        self.label_skills(&mut view);
        Ok(Some(view))
    }

    pub fn hub(&self, hub: &str, months: &MonthRange) -> Result<Option<Value>, ProjectionError> {
        let state: HubState = self.load(&key(HUB, hub))?;
        Ok((!state.is_empty()).then(|| {
            let mut view = state.view(hub, months);
            self.label_skills(&mut view);
            view
        }))
    }

    pub fn company(&self, company: &str) -> Result<Option<Value>, ProjectionError> {
        let state: CompanyState = self.load(&key(COMPANY, company))?;
        Ok((!state.is_empty()).then(|| {
            let mut view = state.view(company);
            self.label_skills(&mut view);
            view
        }))
    }

    /// One page of a kind's summaries: sorted by `sort` (a field of the kind's `SORTABLE`)
    /// through its order keys, or by id; `offset` entries skipped (or, with `cursor`, the
    /// entries after the key a previous page ended at), `limit` taken. Returns the number of
    /// summaries of the kind, the page, and the cursor of the page's end. Reads the page's keys
    /// and summaries only.
    #[allow(clippy::too_many_arguments)]
    pub fn list(
        &self,
        kind: SummaryKind,
        sort: Option<&str>,
        descending: bool,
        offset: usize,
        limit: usize,
        filter: &ListFilter,
        cursor: Option<&str>,
    ) -> Result<Result<ListPage, String>, ProjectionError> {
        let prefix = match kind {
            SummaryKind::Worker => WORKER,
            SummaryKind::Hub => HUB,
            SummaryKind::Company => COMPANY,
        };
        if !filter.is_empty() {
            if cursor.is_some() {
                return Ok(Err(
                    "cursor pages through a whole list; a list narrowed with hub, company, from or to takes offset".into(),
                ));
            }
            return Ok(self
                .list_members(kind, prefix, sort, descending, offset, limit, filter)?
                .map(|(total, items)| ListPage {
                    total,
                    items,
                    cursors: Vec::new(),
                    full: false,
                }));
        }
        if cursor.is_some() && offset > 0 {
            return Ok(Err("give cursor or offset, not both".into()));
        }
        let key_prefix: Vec<u8> = match sort {
            Some(field) => {
                let Some(number) = order::fields(prefix).iter().position(|name| *name == field)
                else {
                    return Ok(Err(format!(
                        "cannot sort by {field:?}; sortable: {}",
                        order::fields(prefix).join(", ")
                    )));
                };
                order::prefix(prefix, u8::try_from(number).unwrap_or(u8::MAX)).to_vec()
            }
            None => vec![prefix],
        };
        let end = order::prefix_end(&key_prefix);
        use std::ops::Bound::{Excluded, Included};
        let keys = match cursor {
            None => self.scan(Included(key_prefix.clone()), Excluded(end), descending),
            Some(cursor) => {
                let after = match order::key_of_cursor(&key_prefix, cursor) {
                    Ok(key) => key,
                    Err(message) => return Ok(Err(message)),
                };
                if descending {
                    self.scan(Included(key_prefix.clone()), Excluded(after), true)
                } else {
                    self.scan(Excluded(after), Excluded(end), false)
                }
            }
        }
        .keys();
        let everything = MonthRange::default();
        let mut page = Vec::new();
        let mut cursors = Vec::new();
        let mut taken = 0;
        for raw in keys.skip(offset) {
            if taken == limit {
                break;
            }
            let raw = raw?;
            taken += 1;
            let id = match sort {
                Some(_) => order::id_of(&raw),
                None => String::from_utf8_lossy(&raw[1..]).into_owned(),
            };
            let view = match kind {
                SummaryKind::Worker => self.worker(&id, &everything)?,
                SummaryKind::Hub => self.hub(&id, &everything)?,
                SummaryKind::Company => self.company(&id)?,
            };
            if let Some(view) = view {
                page.push(view);
                cursors.push(order::cursor_of(&raw, key_prefix.len()));
            }
        }
        Ok(Ok(ListPage {
            total: self.count(prefix)?,
            items: page,
            cursors,
            full: taken == limit,
        }))
    }

    /// A list narrowed to a hub's or a company's members: read from the member keys (as many
    /// as the hub or company has, not every summary), sorted in memory, paged.
    /// A page of the members of `sets` (any of them) in the whole list's order: the kind's
    /// order keys (or its summaries by id) walked, each checked for membership.
    #[allow(clippy::too_many_arguments)]
    fn walk_members(
        &self,
        kind: SummaryKind,
        prefix: u8,
        field: Option<usize>,
        descending: bool,
        offset: usize,
        limit: usize,
        sets: &[(Set, String, String)],
    ) -> Result<Vec<Value>, ProjectionError> {
        let key_prefix = match field {
            Some(number) => order::prefix(prefix, u8::try_from(number).unwrap_or(u8::MAX)).to_vec(),
            None => vec![prefix],
        };
        let keys = self.scan_prefix(&key_prefix, descending).keys();
        let everything = MonthRange::default();
        let mut page = Vec::new();
        let mut skipped = 0;
        for raw in keys {
            if page.len() == limit {
                break;
            }
            let raw = raw?;
            let member = match field {
                Some(_) => order::id_of(&raw),
                None => String::from_utf8_lossy(&raw[1..]).into_owned(),
            };
            let mut member_of = false;
            for (set, id, qualifier) in sets {
                if self.contains(&crate::members::key(*set, id, qualifier, &member))? {
                    member_of = true;
                    break;
                }
            }
            if !member_of {
                continue;
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            let view = match kind {
                SummaryKind::Worker => self.worker(&member, &everything)?,
                _ => self.company(&member)?,
            };
            page.extend(view);
        }
        Ok(page)
    }

    #[allow(clippy::too_many_arguments)]
    fn list_members(
        &self,
        kind: SummaryKind,
        prefix: u8,
        sort: Option<&str>,
        descending: bool,
        offset: usize,
        limit: usize,
        filter: &ListFilter,
    ) -> Result<Result<(u64, Vec<Value>), String>, ProjectionError> {
        let months = filter.from.is_some() || filter.to.is_some();
        // The hub's state (read once): its months, learner groups and counts.
        let hub_state: HubState = match &filter.hub {
            Some(hub) => self.load(&key(HUB, hub))?,
            None => HubState::default(),
        };
        let sets: Vec<(Set, String, String)> = match (kind, &filter.hub, &filter.company) {
            (SummaryKind::Worker, Some(hub), None) if months => {
                let range = MonthRange {
                    from: filter.from.clone(),
                    to: filter.to.clone(),
                };
                hub_state
                    .months
                    .keys()
                    .filter(|month| range.contains(month))
                    .map(|month| (Set::HubMonthWorkers, hub.clone(), month.clone()))
                    .collect()
            }
            // A hub's workers are those of its learner groups (every statement at the hub
            // names one).
            (SummaryKind::Worker, Some(hub), None) => hub_state
                .groups
                .keys()
                .map(|group| (Set::HubGroupWorkers, hub.clone(), group.clone()))
                .collect(),
            (SummaryKind::Worker, None, Some(company)) if !months => {
                vec![(Set::CompanyWorkers, company.clone(), String::new())]
            }
            (SummaryKind::Company, Some(hub), None) if !months => {
                vec![(Set::HubCompanies, hub.clone(), String::new())]
            }
            _ => {
                return Ok(Err(
                    "lists narrow to: workers of a hub (hub=, with from/to for its months), \
                     workers of a company (company=), companies of a hub (hub=)"
                        .into(),
                ))
            }
        };
        let field = match sort {
            Some(field) => match order::fields(prefix).iter().position(|name| *name == field) {
                Some(number) => Some(number),
                None => {
                    return Ok(Err(format!(
                        "cannot sort by {field:?}; sortable: {}",
                        order::fields(prefix).join(", ")
                    )))
                }
            },
            None => None,
        };
        if !months {
            let members = match (kind, &filter.hub, &filter.company) {
                (SummaryKind::Worker, Some(_), _) => hub_state.workers,
                (_, Some(_), _) => hub_state.companies,
                (_, _, Some(company)) => self.load::<CompanyState>(&key(COMPANY, company))?.workers,
                _ => 0,
            };
            // A big hub: walking everyone in order and keeping its members reads about
            // (offset + limit) * everyone / members keys, fewer than its members.
            let wanted = (offset + limit) as u64;
            let everyone = self.count(prefix)?;
            if members.saturating_mul(members) > wanted.saturating_mul(everyone) {
                let page =
                    self.walk_members(kind, prefix, field, descending, offset, limit, &sets)?;
                return Ok(Ok((members, page)));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for (set, id, month) in &sets {
            let start = crate::members::prefix(*set, id, month);
            for item in self.scan_prefix(&start, false).keys() {
                let raw = item?;
                ids.insert(String::from_utf8_lossy(&raw[start.len()..]).into_owned());
            }
        }
        let mut ranked: Vec<(f64, String)> = Vec::with_capacity(ids.len());
        for id in ids {
            let value = match field {
                None => 0.0,
                Some(number) => {
                    let values = match kind {
                        SummaryKind::Worker => {
                            self.load::<WorkerState>(&key(WORKER, &id))?.sort_values()
                        }
                        _ => self.load::<CompanyState>(&key(COMPANY, &id))?.sort_values(),
                    };
                    values.get(number).copied().unwrap_or(f64::MIN)
                }
            };
            ranked.push((value, id));
        }
        // By value, then id, as the order keys sort.
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        if descending {
            ranked.reverse();
        }
        let total = ranked.len() as u64;
        let everything = MonthRange::default();
        let mut page = Vec::new();
        for (_, id) in ranked.into_iter().skip(offset).take(limit) {
            let view = match kind {
                SummaryKind::Worker => self.worker(&id, &everything)?,
                _ => self.company(&id)?,
            };
            page.extend(view);
        }
        Ok(Ok((total, page)))
    }

    /// Every hub's (or company's, or worker's) summary, in key order.
    pub fn all(&self, kind: SummaryKind) -> Result<Vec<Value>, ProjectionError> {
        let prefix = match kind {
            SummaryKind::Worker => WORKER,
            SummaryKind::Hub => HUB,
            SummaryKind::Company => COMPANY,
        };
        let everything = MonthRange::default();
        let mut views = Vec::new();
        for item in self.scan_prefix([prefix], false) {
            let (raw_key, _) = item?;
            let id = String::from_utf8_lossy(&raw_key[1..]).into_owned();
            let view = match kind {
                SummaryKind::Worker => self.worker(&id, &everything)?,
                SummaryKind::Hub => self.hub(&id, &everything)?,
                SummaryKind::Company => self.company(&id)?,
            };
            views.extend(view);
        }
        Ok(views)
    }
}

/// The sort values of each summary a part loaded, as they were before it; written behind,
/// also as the layers beneath the active one hold them ([`Recent::beneath`]).
type SortValues<'a> = (
    &'a PartMap<(u8, String), Option<Vec<f64>>>,
    Option<&'a mut PartMap<(u8, String), Option<Vec<f64>>>>,
);

/// Writes the touched summaries of one kind and their order keys; returns the change in how
/// many there are. A state that cannot be encoded refuses the part (it was skipped before,
/// and [`Recent`] would then keep a state sled never got).
fn write_states<T: Serialize>(
    batch: &mut Part,
    prefix: u8,
    states: &PartMap<String, T>,
    (before, mut beneath): SortValues<'_>,
    sort_values: impl Fn(&T) -> Option<Vec<f64>>,
) -> Result<i64, ProjectionError> {
    let mut change = 0;
    for (id, state) in states {
        let after = sort_values(state);
        let summary = (prefix, id.clone());
        let was = before.get(&summary).and_then(|values| values.as_deref());
        // First touched in this layer: what it was is what the layers beneath hold.
        let under = beneath.as_deref_mut().map(|beneath| {
            beneath
                .entry(summary)
                .or_insert_with(|| was.map(<[f64]>::to_vec))
                .as_deref()
        });
        change += order::update(batch, prefix, id, was, after.as_deref(), under);
        if after.is_none() {
            batch.remove(key(prefix, id));
        } else {
            let bytes = packed::encode(state).map_err(|reason| ProjectionError::Corrupt {
                key: key(prefix, id),
                reason,
            })?;
            batch.insert(key(prefix, id), bytes);
        }
    }
    Ok(change)
}

#[cfg(test)]
#[path = "projection_tests.rs"]
mod tests;
