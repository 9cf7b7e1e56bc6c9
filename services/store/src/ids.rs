//! The ids of the stored statements as a Bloom filter, asked before sled whether a new
//! statement's id is stored already.
//!
//! The answer is nearly always no, and at a million statements sled's answer cost a page
//! fetched for a random key (BENCHMARKS.md, "Why ingest slows as the store grows"). The filter
//! is filled from the id keys by a thread of its own, so a large store opens as fast as it
//! did without one; until that fill is complete every question goes to sled. The writer
//! notes each id before the batch that stores it, so an id stored while the fill runs is in
//! the filter whether the scan meets its key or not. Never emptied: an erased id stays
//! "maybe", which costs the lookup it cost before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use fastbloom::AtomicBloomFilter;
use uuid::Uuid;

use crate::keys;

/// The filter's size: 4 MiB whatever the store's size, one false "maybe" in 100 up to about
/// 3.5 million statements (each costs the sled lookup there was before), more beyond.
const FILTER_BITS: usize = 32 * 1024 * 1024;
const FILTER_ITEMS: usize = 3_000_000;

/// Id keys read between two looks at whether the database is being closed.
const KEYS_PER_LOOK: usize = 4_096;

pub(crate) struct StoredIds {
    shared: Arc<Shared>,
    filler: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    filter: AtomicBloomFilter,
    /// Set once every id key present at open is in the filter.
    complete: AtomicBool,
    /// Set when the database closes: the fill stops where it is.
    stop: AtomicBool,
}

impl StoredIds {
    /// Starts filling the filter from the database's id keys.
    pub(crate) fn fill_from(tree: sled::Db) -> StoredIds {
        let shared = Arc::new(Shared {
            filter: AtomicBloomFilter::with_num_bits(FILTER_BITS).expected_items(FILTER_ITEMS),
            complete: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let filling = shared.clone();
        let filler = std::thread::Builder::new()
            .name("leerspoor-ids".into())
            .spawn(move || fill(&tree, &filling))
            .map_err(|err| tracing::warn!(%err, "no thread for the ids filter; sled answers"))
            .ok();
        StoredIds {
            shared,
            filler: Mutex::new(filler),
        }
    }

    /// False only when the id is surely not stored; true when it may be (ask sled).
    pub(crate) fn may_hold(&self, id: &Uuid) -> bool {
        !self.shared.complete.load(Ordering::Acquire)
            || self.shared.filter.contains(id.as_bytes().as_slice())
    }

    /// Notes an id as stored, before the batch that stores it.
    pub(crate) fn note(&self, id: &Uuid) {
        self.shared.filter.insert(id.as_bytes().as_slice());
    }

    /// Waits for the fill to end; true when the filter is complete.
    #[cfg(test)]
    pub(crate) fn wait_filled(&self) -> bool {
        self.join();
        self.shared.complete.load(Ordering::Acquire)
    }

    fn join(&self) {
        let filler = self
            .filler
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(filler) = filler {
            let _ = filler.join();
        }
    }
}

impl Drop for StoredIds {
    /// Stops the fill and joins its thread: the database is not held open behind the store.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.join();
    }
}

fn fill(tree: &sled::Db, shared: &Shared) {
    let started = std::time::Instant::now();
    let mut count = 0usize;
    for key in tree.scan_prefix([keys::STATEMENT]).keys() {
        if count.is_multiple_of(KEYS_PER_LOOK) && shared.stop.load(Ordering::Acquire) {
            return;
        }
        match key {
            Ok(key) => {
                shared.filter.insert(&key[1..]);
            }
            Err(err) => {
                tracing::warn!(%err, "reading the id keys for the ids filter; sled answers");
                return;
            }
        }
        count += 1;
    }
    shared.complete.store(true, Ordering::Release);
    tracing::debug!(
        ids = count,
        ms = started.elapsed().as_millis() as u64,
        "ids filter filled"
    );
}
