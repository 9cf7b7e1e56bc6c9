//! Secondary indexes, written by a thread of their own.
//!
//! Index entries are half of the store's sled work per statement. The apply thread writes
//! the statements (the system of record) and hands the index terms to this thread, so the two
//! run on both cores. Indexes are derived data: `indexed` in the meta records how far they
//! go, a restart re-indexes whatever lies beyond it, and a query first waits until the
//! indexes cover every statement applied when it started, so reads still see every write
//! that was acknowledged.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use xapi::statement::IndexTerms;

use crate::keys::{self, IndexKind};

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
}

pub struct Indexer {
    sender: Option<SyncSender<IndexJob>>,
    progress: Arc<Progress>,
    thread: Option<JoinHandle<()>>,
}

/// Jobs waiting for the index thread before the apply thread waits too (backpressure).
const QUEUE: usize = 64;

impl Indexer {
    pub fn start(tree: sled::Db, indexed: u64) -> Indexer {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
        let progress = Arc::new(Progress {
            indexed: Mutex::new(indexed),
            moved: Condvar::new(),
        });
        let thread_progress = progress.clone();
        let thread = std::thread::Builder::new()
            .name("leerspoor-indexer".into())
            .spawn(move || run(&tree, &receiver, &thread_progress))
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

fn run(tree: &sled::Db, receiver: &Receiver<IndexJob>, progress: &Progress) {
    while let Ok(first) = receiver.recv() {
        // Everything queued goes into one sled batch.
        let mut jobs = vec![first];
        while let Ok(job) = receiver.try_recv() {
            jobs.push(job);
        }
        let through = jobs.iter().map(|job| job.through).max().unwrap_or(0);
        // Single inserts, not a sled batch: a batch takes sled's process-wide write lock,
        // which would serialise this thread with the apply thread. The progress marker goes
        // last; sled recovers a prefix of its log, so a marker that survived a crash covers
        // entries that survived too, and entries beyond it are written again (same keys).
        let mut written = Ok(());
        for job in &jobs {
            for (position, terms) in &job.entries {
                for key in entry_keys(terms, *position) {
                    written = written.and_then(|()| tree.insert(key, &[] as &[u8]).map(drop));
                }
            }
        }
        let written = written.and_then(|()| {
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

/// One entry per filterable term: each costs ~5 µs of sled work, so only what queries need.
/// The `agent` and `activity` filters use the related indexes (a superset) and the exact
/// check after the lookup, which saves two entries per statement.
pub fn entry_keys(terms: &IndexTerms, position: u64) -> Vec<Vec<u8>> {
    let mut entries = Vec::new();
    for agent in &terms.related_agents {
        entries.push(keys::index(IndexKind::RelatedAgent, agent, position));
    }
    if let Some(verb) = &terms.verb {
        entries.push(keys::index(IndexKind::Verb, verb, position));
    }
    for activity in &terms.related_activities {
        entries.push(keys::index(IndexKind::RelatedActivity, activity, position));
    }
    if let Some(registration) = &terms.registration {
        entries.push(keys::index(IndexKind::Registration, registration, position));
    }
    for sha2 in &terms.attachments {
        entries.push(keys::index(IndexKind::Attachment, sha2, position));
    }
    entries
}
