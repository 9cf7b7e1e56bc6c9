//! A Bloom filter of the ids a database holds, asked before the database whether a new id is
//! there already.
//!
//! The answer is nearly always no, and at a million statements sled's answer costs a page
//! fetched for a random key (BENCHMARKS.md, "Why ingest slows as the store grows"). The store
//! keeps one of its statement ids, the projector one of the statements it has a marker for.
//!
//! The filter is filled from the database's keys by a thread of its own, so a large database
//! opens as fast as it did without one; until that fill is complete [`IdFilter::may_hold`]
//! says "maybe" to everything and the database answers. The writer notes each id with
//! [`IdFilter::note`] before the batch that writes it, so an id written while the fill runs is
//! in the filter whether the fill meets its key or not. Never emptied: an id removed from the
//! database stays "maybe", which costs the lookup it cost without the filter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use fastbloom::AtomicBloomFilter;

/// The filter's size: 4 MiB whatever the database's size, one false "maybe" in 100 up to
/// about 3.5 million ids (each costs the lookup there was before), more beyond.
const FILTER_BITS: usize = 32 * 1024 * 1024;
const FILTER_ITEMS: usize = 3_000_000;

pub struct IdFilter {
    shared: Arc<Shared>,
    filler: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    filter: AtomicBloomFilter,
    /// Set once every id the database held when the fill began is in the filter.
    complete: AtomicBool,
    /// Set when the filter is dropped: the fill stops where it is.
    stop: AtomicBool,
}

/// What a fill is given: where to put the ids it reads.
pub struct Filling<'a> {
    shared: &'a Shared,
}

impl Filling<'_> {
    /// Puts an id in the filter; false once the filter is being dropped (stop reading).
    pub fn insert(&self, id: &[u8]) -> bool {
        self.shared.filter.insert(id);
        !self.shared.stop.load(Ordering::Relaxed)
    }
}

impl IdFilter {
    /// Starts `fill` on a thread named `name`. It inserts every id the database holds and
    /// returns true, or returns false (it failed, or [`Filling::insert`] said stop), and the
    /// filter then stays "maybe" for everything.
    pub fn fill_with(name: &str, fill: impl FnOnce(&Filling) -> bool + Send + 'static) -> IdFilter {
        let shared = Arc::new(Shared {
            filter: AtomicBloomFilter::with_num_bits(FILTER_BITS).expected_items(FILTER_ITEMS),
            complete: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let filling = shared.clone();
        let filler = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if fill(&Filling { shared: &filling }) {
                    filling.complete.store(true, Ordering::Release);
                }
            })
            .ok();
        IdFilter {
            shared,
            filler: Mutex::new(filler),
        }
    }

    /// A filter with no fill: "maybe" to everything, for a database not ready to be read yet.
    pub fn unfilled() -> IdFilter {
        IdFilter {
            shared: Arc::new(Shared {
                filter: AtomicBloomFilter::with_num_bits(64).expected_items(1),
                complete: AtomicBool::new(false),
                stop: AtomicBool::new(false),
            }),
            filler: Mutex::new(None),
        }
    }

    /// False only when the id is surely not in the database; true when it may be (ask it).
    pub fn may_hold(&self, id: &[u8]) -> bool {
        !self.shared.complete.load(Ordering::Acquire) || self.shared.filter.contains(id)
    }

    /// Notes an id as written, before the batch that writes it.
    pub fn note(&self, id: &[u8]) {
        self.shared.filter.insert(id);
    }

    /// Waits for the fill to end; true when the filter is complete.
    pub fn wait_filled(&self) -> bool {
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

impl Drop for IdFilter {
    /// Stops the fill and joins its thread: the database is not held open behind its owner.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_filter_holds_every_id_and_says_no_to_nearly_all_others() {
        let ids: Vec<[u8; 8]> = (0u64..10_000).map(|n| (n * 2).to_be_bytes()).collect();
        let source = ids.clone();
        let filter = IdFilter::fill_with("test-ids", move |filling| {
            source.iter().all(|id| filling.insert(id))
        });
        assert!(filter.wait_filled());
        assert!(ids.iter().all(|id| filter.may_hold(id)));
        let others = (0u64..10_000)
            .map(|n| (n * 2 + 1).to_be_bytes())
            .filter(|id| filter.may_hold(id))
            .count();
        assert!(others < 100, "{others} false maybes in 10,000");
        filter.note(&1u64.to_be_bytes());
        assert!(filter.may_hold(&1u64.to_be_bytes()));
    }

    #[test]
    fn a_fill_that_fails_leaves_every_answer_maybe() {
        let filter = IdFilter::fill_with("test-ids", |filling| {
            filling.insert(b"one");
            false
        });
        assert!(!filter.wait_filled());
        assert!(filter.may_hold(b"two"));
    }

    #[test]
    fn dropping_the_filter_stops_its_fill() {
        let (started, wait) = std::sync::mpsc::channel();
        let filter = IdFilter::fill_with("test-ids", move |filling| {
            let _ = started.send(());
            // Reads until told to stop: returns only when the drop says so.
            let mut n = 0u64;
            while filling.insert(&n.to_be_bytes()) {
                n += 1;
            }
            true
        });
        wait.recv().expect("fill started");
        drop(filter);
    }
}
