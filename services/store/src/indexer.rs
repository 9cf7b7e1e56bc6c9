//! Secondary indexes, written by a thread of their own.
//!
//! Index entries are half of the store's sled work per statement. The apply thread writes
//! the statements (the system of record) and hands the index terms to this thread, so the two
//! run on both cores. Indexes are derived data: `indexed` in the meta records how far they
//! go, a restart re-indexes whatever lies beyond it, and a query first waits until the
//! indexes cover every statement applied when it started, so reads still see every write
//! that was acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use xapi::statement::IndexTerms;

use crate::keys::{self, IndexKind, Postings};

/// The index terms of one message's statements, by position (a statement that references
/// another is also indexed under its target's terms, so a position may appear twice).
pub struct IndexJob {
    pub entries: Vec<(u64, IndexTerms)>,
    /// Every position at or below this one is covered once this job is applied.
    pub through: u64,
}

/// How far the indexes reach, shared with queries.
#[derive(Default)]
struct Progress {
    indexed: Mutex<u64>,
    moved: Condvar,
    /// Counts the times postings were changed by another thread (an erasure): the index
    /// thread then reads its newest block from the tree again ([`NewestBlock`]).
    changed_elsewhere: AtomicU64,
}

pub struct Indexer {
    sender: Option<SyncSender<IndexJob>>,
    progress: Arc<Progress>,
    thread: Option<JoinHandle<()>>,
}

/// Jobs waiting for the index thread before the apply thread waits too (backpressure).
const QUEUE: usize = 64;

impl Indexer {
    /// Starts the index thread on a database whose indexes cover positions up to `indexed`
    /// and which never stored a statement at `unused` or after (the next position).
    pub fn start(tree: sled::Db, indexed: u64, unused: u64) -> Indexer {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
        let progress = Arc::new(Progress {
            indexed: Mutex::new(indexed),
            moved: Condvar::new(),
            changed_elsewhere: AtomicU64::new(0),
        });
        let thread_progress = progress.clone();
        let thread = std::thread::Builder::new()
            .name("leerspoor-indexer".into())
            .spawn(move || run(&tree, &receiver, &thread_progress, unused))
            .ok();
        Indexer {
            sender: Some(sender),
            progress,
            thread,
        }
    }

    /// Queues a job; blocks while the queue is full.
    pub fn submit(&self, job: IndexJob) {
        if let Some(sender) = &self.sender {
            if sender.send(job).is_err() {
                tracing::error!("index thread is gone; indexes will be rebuilt at restart");
            }
        }
    }

    /// Says that postings were changed by another thread while this one was idle (an
    /// erasure, which waits for the indexes first and is the only other writer).
    pub fn postings_changed_elsewhere(&self) {
        self.progress
            .changed_elsewhere
            .fetch_add(1, Ordering::AcqRel);
    }

    /// Waits until the indexes cover `position`, at most `timeout`. False on timeout.
    pub fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let indexed = self
            .progress
            .indexed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (indexed, _) = self
            .progress
            .moved
            .wait_timeout_while(indexed, timeout, |indexed| *indexed < position)
            .unwrap_or_else(|poison| poison.into_inner());
        *indexed >= position
    }
}

impl Drop for Indexer {
    /// Lets the thread finish the queue, then joins it.
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(tree: &sled::Db, receiver: &Receiver<IndexJob>, progress: &Progress, unused: u64) {
    let mut newest = NewestBlock::new(unused);
    let mut seen_elsewhere = 0;
    while let Ok(first) = receiver.recv() {
        let changed_elsewhere = progress.changed_elsewhere.load(Ordering::Acquire);
        if changed_elsewhere != seen_elsewhere {
            seen_elsewhere = changed_elsewhere;
            newest.forget();
        }
        // Everything queued is written together: a term's posting once for all of it.
        let mut jobs = vec![first];
        while let Ok(job) = receiver.try_recv() {
            jobs.push(job);
        }
        let through = jobs.iter().map(|job| job.through).max().unwrap_or(0);
        let mut changes = PostingChanges::default();
        for job in &jobs {
            for (position, terms) in &job.entries {
                changes.add_terms(terms, *position);
            }
        }
        // Single inserts, not a sled batch: a batch takes sled's process-wide write lock,
        // which would serialise this thread with the apply thread. The progress marker goes
        // last; sled recovers a prefix of its log, so a marker that survived a crash covers
        // entries that survived too, and entries beyond it are added again (a set: no change).
        // This thread is the only writer of postings but for an erasure, which waits until
        // the indexes are complete and runs on the apply thread, so no job comes meanwhile.
        let written = changes
            .merged_from(Change::Add, |key| newest.stored(tree, key))
            .and_then(|merged| {
                for (key, value) in merged {
                    if let Some(value) = value {
                        tree.insert(key.as_slice(), value.as_slice())?;
                        newest.wrote(key, value);
                    }
                }
                tree.insert(keys::META_INDEXED, &through.to_be_bytes())
                    .map(drop)
            });
        if let Err(err) = written {
            tracing::error!(error = %err, "index write failed; indexes will be rebuilt at restart");
            return;
        }
        let mut indexed = progress
            .indexed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *indexed = (*indexed).max(through);
        progress.moved.notify_all();
    }
}

/// The postings of the newest block, as the index thread wrote them. A job's positions are
/// the newest, so nearly all its keys are in this block; read back from sled they cost a page
/// fetch per key at a million statements, since term-first keys lie all over the tree
/// (BENCHMARKS.md, "Why ingest slows as the store grows"). One block's keys at most: a few
/// thousand statements' terms.
struct NewestBlock {
    block: u64,
    postings: HashMap<Vec<u8>, Vec<u8>>,
    /// Every posting of the block is here (a key not here has none): the block starts at or
    /// after the position the store had not used at open (so nothing of it was written
    /// before, not even by a run that crashed), and no erasure came since it began.
    whole: bool,
    /// The first position not stored at open.
    unused: u64,
}

impl NewestBlock {
    fn new(unused: u64) -> NewestBlock {
        let mut newest = NewestBlock {
            block: 0,
            postings: HashMap::new(),
            whole: false,
            unused,
        };
        newest.begin(0);
        newest
    }

    fn begin(&mut self, block: u64) {
        self.block = block;
        self.postings.clear();
        // Position 0 is never used.
        self.whole = block.saturating_mul(keys::POSTING_BLOCK).max(1) >= self.unused;
    }

    /// The stored value of a postings key, from here when it is in the newest block.
    fn stored(&mut self, tree: &sled::Db, key: &[u8]) -> sled::Result<Option<Vec<u8>>> {
        let block = keys::trailing_u64(key).unwrap_or(0);
        if block > self.block {
            self.begin(block);
        }
        if block == self.block {
            if let Some(value) = self.postings.get(key) {
                return Ok(Some(value.clone()));
            }
            if self.whole {
                return Ok(None);
            }
        }
        Ok(tree.get(key)?.map(|value| value.to_vec()))
    }

    /// Keeps what was written to a key of the newest block.
    fn wrote(&mut self, key: Vec<u8>, value: Vec<u8>) {
        if keys::trailing_u64(&key) == Some(self.block) {
            self.postings.insert(key, value);
        }
    }

    /// Postings were changed elsewhere: read the block from the tree again.
    fn forget(&mut self) {
        self.postings.clear();
        self.whole = false;
    }
}

/// The terms a statement is indexed under, one posting each: each costs sled work, so only
/// what queries need. The `agent` and `activity` filters use the related indexes (a superset)
/// and the exact check after the lookup, which saves two terms per statement.
pub fn entry_terms(terms: &IndexTerms) -> Vec<(IndexKind, &str)> {
    let mut entries = Vec::new();
    for agent in &terms.related_agents {
        entries.push((IndexKind::RelatedAgent, agent.as_str()));
    }
    if let Some(verb) = &terms.verb {
        entries.push((IndexKind::Verb, verb.as_str()));
    }
    for activity in &terms.related_activities {
        entries.push((IndexKind::RelatedActivity, activity.as_str()));
    }
    if let Some(registration) = &terms.registration {
        entries.push((IndexKind::Registration, registration.as_str()));
    }
    for sha2 in &terms.attachments {
        entries.push((IndexKind::Attachment, sha2.as_str()));
    }
    entries
}

/// A postings key and its new value (`None`: no position left, remove the key).
pub type MergedKey = (Vec<u8>, Option<Vec<u8>>);

/// Whether [`PostingChanges`] add their positions to the stored postings or take them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add,
    Remove,
}

/// Positions to add to or remove from postings, gathered by key so that each key is read and
/// written once however many statements of a message (or of several) name its term.
#[derive(Default)]
pub struct PostingChanges {
    keys: BTreeMap<Vec<u8>, Vec<u64>>,
}

impl PostingChanges {
    /// Every term of a statement's index terms, at its position.
    pub fn add_terms(&mut self, terms: &IndexTerms, position: u64) {
        for (kind, term) in entry_terms(terms) {
            self.add(kind, term, position);
        }
    }

    pub fn add(&mut self, kind: IndexKind, term: &str, position: u64) {
        self.keys
            .entry(keys::posting(kind, term, position))
            .or_default()
            .push(position);
    }

    /// The keys whose postings change, in key order, with their new value (`None`: no
    /// position left, remove the key), read from the tree as it is now.
    pub fn merged(self, tree: &sled::Db, change: Change) -> sled::Result<Vec<MergedKey>> {
        self.merged_from(change, |key| Ok(tree.get(key)?.map(|value| value.to_vec())))
    }

    /// [`PostingChanges::merged`], with the stored values read by `stored`.
    fn merged_from(
        self,
        change: Change,
        mut stored: impl FnMut(&[u8]) -> sled::Result<Option<Vec<u8>>>,
    ) -> sled::Result<Vec<MergedKey>> {
        let mut merged = Vec::with_capacity(self.keys.len());
        for (key, positions) in self.keys {
            let stored = stored(&key)?;
            let mut postings = match stored.as_deref().map(Postings::decode) {
                None => Postings::default(),
                Some(Some(postings)) => postings,
                Some(None) => {
                    // Derived data: rewritten from the statements rather than kept broken.
                    tracing::warn!(key = ?key, "unreadable postings replaced");
                    Postings::default()
                }
            };
            let mut changed = false;
            for position in positions {
                changed |= match change {
                    Change::Add => postings.insert(position),
                    Change::Remove => postings.remove(position),
                };
            }
            if changed {
                let value = (!postings.is_empty()).then(|| postings.encode());
                merged.push((key, value));
            }
        }
        Ok(merged)
    }

    /// [`PostingChanges::merged`], written into a batch.
    pub fn merge_into(
        self,
        tree: &sled::Db,
        change: Change,
        batch: &mut sled::Batch,
    ) -> sled::Result<()> {
        for (key, value) in self.merged(tree, change)? {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        Ok(())
    }
}
