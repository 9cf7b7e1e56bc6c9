//! Writes applied and not yet in sled: what lets the projector write behind.
//!
//! Under ingest the projector's lag was two applies of a pull, and half of an apply was sled
//! writing the same workers' states and order keys again with every pull (BENCHMARKS.md, the
//! twenty-fifth and twenty-sixth rounds). With writing behind, a pull's part goes into the
//! overlay's *active* layer, which every read of the projection consults before sled, so the
//! summaries answer with it at once. A checkpoint ([`crate::projection::Projection::checkpoint`])
//! freezes the active layer (a fresh one takes the next pulls), writes the frozen one to sled
//! as one part (journaled: [`crate::part`]) while reads still consult it, flushes, and only
//! then lets it go; the service acknowledges the pulls' messages after that. A key written by
//! many pulls between two checkpoints reaches sled once.
//!
//! A key a part removes that only the active layer holds (an order key written by an earlier
//! pull since the layer began) is taken back out of the layer rather than written as a
//! removal ([`Forgets`]): a checkpoint then writes each summary's order keys once, from the
//! values sled holds to the newest, not a removal for every value between.
//!
//! Nothing acknowledged is only here: a projector that dies loses the overlay and gets its
//! messages again from `LRS_STORED`, and applies them to what sled holds, which is what it
//! held before them (every checkpoint is one part, whole or not at all).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::part::Writes;

/// The layers: what pulls applied since the last freeze, and what a checkpoint is writing.
#[derive(Default)]
struct Layers {
    active: Writes,
    /// Bytes of keys and values in `active`.
    active_bytes: usize,
    frozen: Option<Arc<Writes>>,
    /// Which active layer this is: one more with every freeze of an active layer.
    generation: u64,
}

/// Keys a part takes back out of the active layer of `generation` instead of removing them:
/// keys that earlier pulls wrote into that layer and that nothing beneath it (the frozen
/// layer, sled) holds. Merged into a later layer, they are removals like any other (what is
/// beneath then may hold them).
#[derive(Debug, Default)]
pub struct Forgets {
    pub keys: Vec<Vec<u8>>,
    pub generation: u64,
}

#[derive(Default)]
pub struct Overlay {
    layers: RwLock<Layers>,
}

/// What the overlay says of a key: written (`Some(value)`), removed (`Some(None)`), or
/// nothing (`None`: ask sled).
pub type Said = Option<Option<sled::IVec>>;

impl Overlay {
    fn read(&self) -> RwLockReadGuard<'_, Layers> {
        self.layers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Layers> {
        self.layers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the newest layer that holds `key` says of it.
    pub fn get(&self, key: &[u8]) -> Said {
        let layers = self.read();
        if let Some(said) = layers.active.get(key) {
            return Some(said.clone());
        }
        layers.frozen.as_ref()?.get(key).cloned()
    }

    /// Every key the layers hold within the bounds, in key order, the newest layer's word for
    /// each (removals included, to hide what sled still holds).
    pub fn range(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Vec<(Vec<u8>, Option<sled::IVec>)> {
        let layers = self.read();
        if layers.active.is_empty() && layers.frozen.is_none() {
            return Vec::new();
        }
        let mut found: BTreeMap<&[u8], &Option<sled::IVec>> = BTreeMap::new();
        if let Some(frozen) = &layers.frozen {
            for (key, said) in frozen.range::<[u8], _>((lower, upper)) {
                found.insert(key, said);
            }
        }
        for (key, said) in layers.active.range::<[u8], _>((lower, upper)) {
            found.insert(key, said);
        }
        found
            .into_iter()
            .map(|(key, said)| (key.to_vec(), said.clone()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        let layers = self.read();
        layers.active.is_empty() && layers.frozen.is_none()
    }

    /// Bytes of keys and values in the active layer.
    pub fn active_bytes(&self) -> usize {
        self.read().active_bytes
    }

    /// Which active layer takes merges now (see [`Forgets`]).
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Puts a part's writes into the active layer (a key's newest write wins), after taking
    /// its [`Forgets`] out of it, in one step for readers.
    pub fn merge(&self, writes: Writes, forgets: Forgets) {
        let mut layers = self.write();
        if forgets.generation == layers.generation {
            for key in &forgets.keys {
                if let Some(value) = layers.active.remove(key) {
                    let bytes = key.len() + value.map_or(0, |value| value.len());
                    layers.active_bytes = layers.active_bytes.saturating_sub(bytes);
                }
            }
        } else {
            // A freeze came between: what the part would forget may now be beneath.
            for key in forgets.keys {
                if !writes.contains_key(&key) {
                    layers.merge_one(key, None);
                }
            }
        }
        for (key, value) in writes {
            layers.merge_one(key, value);
        }
    }

    /// The layer a checkpoint writes: one left frozen by a checkpoint that failed (`true`),
    /// else the active layer, frozen now (`None`: nothing to write).
    pub fn freeze(&self) -> Option<(Arc<Writes>, bool)> {
        let mut layers = self.write();
        if let Some(frozen) = &layers.frozen {
            return Some((frozen.clone(), true));
        }
        if layers.active.is_empty() {
            return None;
        }
        let frozen = Arc::new(std::mem::take(&mut layers.active));
        layers.active_bytes = 0;
        layers.generation += 1;
        layers.frozen = Some(frozen.clone());
        Some((frozen, false))
    }

    /// The active layer as it is (for tests).
    #[cfg(test)]
    pub fn active(&self) -> Writes {
        self.read().active.clone()
    }

    /// Lets the frozen layer go, once sled holds it.
    pub fn written(&self) {
        self.write().frozen = None;
    }
}

impl Layers {
    fn merge_one(&mut self, key: Vec<u8>, value: Option<sled::IVec>) {
        let key_bytes = key.len();
        let value_bytes = value.as_ref().map_or(0, |value| value.len());
        match self.active.insert(key, value) {
            Some(old) => {
                let old_bytes = old.map_or(0, |value| value.len());
                self.active_bytes = (self.active_bytes + value_bytes).saturating_sub(old_bytes);
            }
            None => self.active_bytes += key_bytes + value_bytes,
        }
    }
}

/// Parts being applied behind, which a checkpoint's sled batches wait for
/// ([`Applying::wait_for_none`]).
///
/// sled 0.34 holds one process-wide lock for each batch, and every read and write of any of
/// the process's databases waits for it meanwhile. A pull applied beside a checkpoint read its
/// states and counts from sled between the checkpoint's batches: it took 95–138 ms per 400
/// statements in the median, against 44–63 otherwise (BENCHMARKS.md, the forty-third round),
/// and the projector's lag came from those pulls. So a checkpoint writes while no part is
/// applied. It cannot be held back for long: once the active layer holds twice
/// `BEHIND_BYTES`, the pulls wait for the checkpoint instead (`crate::service`).
#[derive(Default)]
pub struct Applying {
    state: Mutex<Counted>,
    none: Condvar,
}

#[derive(Default)]
struct Counted {
    /// Parts being applied.
    parts: usize,
    /// Checkpoints waiting for them.
    waiting: usize,
}

/// A part being applied: [`Applying`] counts it until this is dropped.
pub struct Apply<'a>(&'a Applying);

impl Applying {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counted> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a part as applied until the guard is dropped.
    pub fn begin(&self) -> Apply<'_> {
        self.lock().parts += 1;
        Apply(self)
    }

    /// Returns once no part is being applied.
    pub fn wait_for_none(&self) {
        let mut counted = self.lock();
        counted.waiting += 1;
        let mut counted = self
            .none
            .wait_while(counted, |counted| counted.parts > 0)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counted.waiting -= 1;
    }

    /// How many checkpoints wait for the parts (for tests).
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }
}

impl Drop for Apply<'_> {
    fn drop(&mut self) {
        let mut counted = self.0.lock();
        counted.parts -= 1;
        if counted.parts == 0 {
            self.0.none.notify_all();
        }
    }
}

/// A bound on owned keys as one on borrowed keys (for [`Overlay::range`]).
pub(crate) fn bound_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A scan of sled within bounds with the overlay's word laid over it: keys the overlay removed
/// are skipped, keys it wrote come with its value, in key order (or its reverse).
pub struct Scan {
    tree: sled::Iter,
    over: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, Option<sled::IVec>)>>,
    next_tree: Option<(sled::IVec, sled::IVec)>,
    reverse: bool,
    failed: bool,
}

impl Scan {
    pub fn new(
        tree: sled::Iter,
        mut over: Vec<(Vec<u8>, Option<sled::IVec>)>,
        reverse: bool,
    ) -> Scan {
        if reverse {
            over.reverse();
        }
        Scan {
            tree,
            over: over.into_iter().peekable(),
            next_tree: None,
            reverse,
            failed: false,
        }
    }

    /// The keys only.
    pub fn keys(self) -> impl Iterator<Item = sled::Result<sled::IVec>> {
        self.map(|item| item.map(|(key, _)| key))
    }

    fn tree_next(&mut self) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
        if let Some(next) = self.next_tree.take() {
            return Ok(Some(next));
        }
        let item = if self.reverse {
            self.tree.next_back()
        } else {
            self.tree.next()
        };
        item.transpose()
    }
}

impl Iterator for Scan {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let from_tree = match self.tree_next() {
                Ok(item) => item,
                Err(err) => {
                    self.failed = true;
                    return Some(Err(err));
                }
            };
            // Which comes first in the scan's direction: sled's key or the overlay's.
            let over_first = match (&from_tree, self.over.peek()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some((key, _)), Some((over_key, _))) => {
                    let order = over_key.as_slice().cmp(key.as_ref());
                    if self.reverse {
                        order.is_ge()
                    } else {
                        order.is_le()
                    }
                }
            };
            if !over_first {
                return from_tree.map(Ok);
            }
            let Some((over_key, said)) = self.over.next() else {
                return from_tree.map(Ok);
            };
            match &from_tree {
                // The same key: the overlay's word replaces sled's.
                Some((key, _)) if key.as_ref() == over_key.as_slice() => {}
                // sled's key comes later: kept for the next call.
                _ => self.next_tree = from_tree,
            }
            if let Some(value) = said {
                return Some(Ok((sled::IVec::from(over_key), value)));
            }
            // Removed in the overlay: skipped.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Model = BTreeMap<Vec<u8>, Vec<u8>>;

    fn writes(found: &[(Vec<u8>, Option<Vec<u8>>)]) -> Writes {
        found
            .iter()
            .map(|(key, value)| (key.clone(), value.clone().map(sled::IVec::from)))
            .collect()
    }

    fn laid_over(model: &mut Model, layer: &[(Vec<u8>, Option<Vec<u8>>)]) {
        for (key, value) in layer {
            match value {
                Some(value) => model.insert(key.clone(), value.clone()),
                None => model.remove(key),
            };
        }
    }

    fn bound(kind: u8, key: Vec<u8>) -> Bound<Vec<u8>> {
        match kind {
            0 => Bound::Included(key),
            1 => Bound::Excluded(key),
            _ => Bound::Unbounded,
        }
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(0u8..4, 0..4)
    }

    fn layer() -> impl Strategy<Value = Vec<(Vec<u8>, Option<Vec<u8>>)>> {
        prop::collection::vec(
            (
                key(),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..3)),
            ),
            0..12,
        )
    }

    proptest! {
        /// A scan of sled with a frozen and an active layer over it reads as the three
        /// applied in turn, within any bounds, in either direction; a key's `get` too.
        #[test]
        fn a_scan_reads_as_the_layers_applied_in_turn(
            base in prop::collection::btree_map(key(), prop::collection::vec(any::<u8>(), 0..3), 0..12),
            frozen in layer(),
            active in layer(),
            lower in (0u8..3, key()),
            upper in (0u8..3, key()),
            reverse in any::<bool>(),
        ) {
            let tree = sled::Config::new().temporary(true).open().expect("sled");
            for (key, value) in &base {
                tree.insert(key.as_slice(), value.as_slice()).expect("insert");
            }
            let overlay = Overlay::default();
            overlay.merge(writes(&frozen), Forgets::default());
            match overlay.freeze() {
                Some((_, leftover)) => prop_assert!(!leftover),
                None => prop_assert!(frozen.is_empty()),
            }
            overlay.merge(writes(&active), Forgets::default());
            let mut model = base.clone();
            laid_over(&mut model, &frozen);
            laid_over(&mut model, &active);

            let (lower, upper) = (bound(lower.0, lower.1), bound(upper.0, upper.1));
            let empty = match (&lower, &upper) {
                (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => {
                    l > u || (l == u && !(matches!(lower, Bound::Included(_)) && matches!(upper, Bound::Included(_))))
                }
                _ => false,
            };
            // sled and BTreeMap refuse ranges that end before they start.
            prop_assume!(!empty);
            let mut expected: Vec<(Vec<u8>, Vec<u8>)> = model
                .range((lower.clone(), upper.clone()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            if reverse {
                expected.reverse();
            }
            let over = overlay.range(bound_ref(&lower), bound_ref(&upper));
            let scanned: Vec<(Vec<u8>, Vec<u8>)> = Scan::new(tree.range((lower, upper)), over, reverse)
                .map(|item| item.map(|(key, value)| (key.to_vec(), value.to_vec())))
                .collect::<Result<_, _>>()
                .expect("sled reads");
            prop_assert_eq!(scanned, expected);
            for (key, _) in frozen.iter().chain(&active) {
                let said = overlay.get(key).expect("the overlay holds every key written");
                prop_assert_eq!(said.map(|value| value.to_vec()), model.get(key).cloned());
            }
        }
    }

    /// A key forgotten in the layer that wrote it is gone from the overlay (what sled holds
    /// answers); forgotten in a later layer, it is removed like any other (the layer beneath
    /// may hold it).
    #[test]
    fn a_key_is_forgotten_only_by_the_layer_that_wrote_it() {
        let one = |key: &[u8]| -> Writes {
            [(key.to_vec(), Some(sled::IVec::from(&b"v"[..])))]
                .into_iter()
                .collect()
        };
        let forget = |key: &[u8], generation| Forgets {
            keys: vec![key.to_vec()],
            generation,
        };
        let overlay = Overlay::default();
        let first = overlay.generation();
        overlay.merge(one(b"a"), Forgets::default());
        overlay.merge(one(b"b"), Forgets::default());
        overlay.merge(Writes::new(), forget(b"a", first));
        assert_eq!(overlay.get(b"a"), None, "ask sled");
        assert_eq!(overlay.active_bytes(), 2);

        assert!(overlay.freeze().is_some());
        let second = overlay.generation();
        assert_ne!(first, second);
        // A part that began before the freeze: its forget of "b" lands in the new layer.
        overlay.merge(Writes::new(), forget(b"b", first));
        assert_eq!(
            overlay.get(b"b"),
            Some(None),
            "removed: the frozen layer holds it"
        );
        overlay.merge(one(b"c"), Forgets::default());
        overlay.merge(Writes::new(), forget(b"c", second));
        assert_eq!(overlay.get(b"c"), None);
    }

    /// A wait for the parts being applied ends at once when none is, and with the last one.
    #[test]
    fn a_wait_for_the_parts_ends_with_the_last() {
        let applying = Applying::default();
        applying.wait_for_none();
        let (first, second) = (applying.begin(), applying.begin());
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| applying.wait_for_none());
            while applying.waiting() == 0 && !waiter.is_finished() {
                std::thread::yield_now();
            }
            assert!(!waiter.is_finished(), "waits while a part is applied");
            drop(first);
            drop(second);
            waiter.join().expect("waiter");
        });
        assert_eq!(applying.waiting(), 0);
        applying.wait_for_none();
    }

    /// The active layer's bytes follow what it holds: a key written again counts once.
    #[test]
    fn the_active_layer_counts_its_bytes_once_per_key() {
        let overlay = Overlay::default();
        let one = |key: &[u8], value: Option<&[u8]>| -> Writes {
            [(key.to_vec(), value.map(sled::IVec::from))]
                .into_iter()
                .collect()
        };
        overlay.merge(one(b"ab", Some(b"1234")), Forgets::default());
        assert_eq!(overlay.active_bytes(), 6);
        overlay.merge(one(b"ab", Some(b"12")), Forgets::default());
        assert_eq!(overlay.active_bytes(), 4);
        overlay.merge(one(b"ab", None), Forgets::default());
        assert_eq!(overlay.active_bytes(), 2);
        overlay.merge(one(b"c", Some(b"1")), Forgets::default());
        assert_eq!(overlay.active_bytes(), 4);
        assert!(overlay.freeze().is_some());
        assert_eq!(overlay.active_bytes(), 0);
        assert!(
            !overlay.is_empty(),
            "the frozen layer is read until written"
        );
        overlay.written();
        assert!(overlay.is_empty());
        assert!(overlay.freeze().is_none());
    }
}
