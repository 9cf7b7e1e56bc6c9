//! Walking the positions of one index term, or of every statement, in order: the reads
//! behind queries, the Activities and Agents resources and erasure.
//!
//! A term's entries lie in one key range per block of [`keys::INDEX_BLOCK`] positions (see
//! [`keys::POSTING`]); the walks read those ranges one after another and never see the
//! blocks.

use crate::db::DbError;
use crate::keys::{self, IndexKind};

/// Whose positions a walk yields.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Every stored statement's (the `p` keys).
    Positions,
    /// One term's entries in a filter index.
    Term { kind: IndexKind, hash: u64 },
}

impl Source {
    /// The entries of `term` in the `kind` index (not [`IndexKind::Attachment`], which is
    /// looked up by term: [`keys::attachment_prefix`]).
    pub fn term(kind: IndexKind, term: &str) -> Source {
        Source::Term {
            kind,
            hash: keys::term_hash(term),
        }
    }

    fn key(self, position: u64) -> Vec<u8> {
        match self {
            Source::Positions => keys::position(position),
            Source::Term { kind, hash } => keys::posting(kind, hash, position),
        }
    }

    /// The keys of the positions in `low..high` (not empty, within one block of a term): up
    /// to the last position's key, as the key of `high` may lie in the next block.
    fn range(self, low: u64, high: u64) -> std::ops::RangeInclusive<Vec<u8>> {
        self.key(low)..=self.key(high - 1)
    }

    /// The position ranges in `low..high` to read, ascending: one, or one per block.
    fn ranges(self, low: u64, high: u64) -> impl DoubleEndedIterator<Item = (u64, u64)> {
        let blocks = match self {
            _ if low >= high => 0..0,
            Source::Positions => 0..1,
            Source::Term { .. } => low / keys::INDEX_BLOCK..(high - 1) / keys::INDEX_BLOCK + 1,
        };
        blocks.map(move |block| match self {
            Source::Positions => (low, high),
            Source::Term { .. } => {
                let start = block * keys::INDEX_BLOCK;
                (low.max(start), high.min(start + keys::INDEX_BLOCK))
            }
        })
    }

    /// The positions in `low..high`, ascending, read lazily.
    pub fn between(
        self,
        tree: &sled::Db,
        low: u64,
        high: u64,
    ) -> impl Iterator<Item = Result<u64, DbError>> + 'static {
        let tree = tree.clone();
        self.ranges(low, high)
            .flat_map(move |(low, high)| tree.range(self.range(low, high)))
            .map(position_of)
    }

    /// Every position, ascending: up to the last block that holds any filter index entry.
    pub fn all(
        self,
        tree: &sled::Db,
    ) -> Result<impl Iterator<Item = Result<u64, DbError>>, DbError> {
        let end = match self {
            Source::Positions => u64::MAX,
            // The end of the last block (its last key is some term's, not the last position).
            Source::Term { .. } => match tree.scan_prefix([keys::POSTING]).next_back() {
                Some(item) => (position_of(item)? / keys::INDEX_BLOCK + 1) * keys::INDEX_BLOCK,
                None => 0,
            },
        };
        Ok(self.between(tree, 0, end))
    }

    /// The newest position below `below`: one sled descent per block it looks in.
    fn newest_below(self, tree: &sled::Db, below: u64) -> Option<Result<u64, DbError>> {
        self.ranges(0, below).rev().find_map(|(low, high)| {
            tree.range(self.range(low, high))
                .next_back()
                .map(position_of)
        })
    }
}

fn position_of(item: sled::Result<(sled::IVec, sled::IVec)>) -> Result<u64, DbError> {
    let (key, _) = item?;
    keys::trailing_u64(&key).ok_or_else(|| DbError::Corrupt {
        key: key.to_vec(),
        reason: "short index key".into(),
    })
}

/// The positions of a source from a position on, oldest first, up to an end.
pub(crate) struct Ascending {
    tree: sled::Db,
    source: Source,
    end: u64,
    range: Box<dyn Iterator<Item = Result<u64, DbError>>>,
}

impl Ascending {
    /// Positions in `from..end`.
    pub(crate) fn new(tree: sled::Db, source: Source, from: u64, end: u64) -> Ascending {
        let range = Box::new(source.between(&tree, from, end));
        Ascending {
            tree,
            source,
            end,
            range,
        }
    }

    pub(crate) fn skip_to(&mut self, from: u64) {
        self.range = Box::new(self.source.between(&self.tree, from, self.end));
    }
}

impl Iterator for Ascending {
    type Item = Result<u64, DbError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.range.next()
    }
}

/// The first window of positions a newest-first walk reads; each next one is twice as wide,
/// up to [`WIDEST_WINDOW`].
const FIRST_WINDOW: u64 = 128;
const WIDEST_WINDOW: u64 = 1 << 16;

/// The positions of a source below `below`, newest first, read as forward ranges over
/// windows of positions walking down. sled iterates backwards an order of magnitude slower
/// than forwards (each step back can descend the tree again): a 100-row page by verb took
/// ~20 ms that way, most of a newest-first query's time.
pub(crate) struct Descending {
    tree: sled::Db,
    source: Source,
    /// Positions at or above this are done.
    below: u64,
    window: u64,
    /// The current window's positions, ascending (taken from the end).
    found: Vec<u64>,
}

impl Descending {
    pub(crate) fn new(tree: sled::Db, source: Source, below: u64) -> Descending {
        Descending {
            tree,
            source,
            below,
            window: FIRST_WINDOW,
            found: Vec::new(),
        }
    }

    /// Goes on with the positions below `low` only.
    pub(crate) fn skip_below(&mut self, low: u64) {
        let keep = self.found.partition_point(|position| *position < low);
        self.found.truncate(keep);
        self.below = self.below.min(low);
    }

    /// Reads the next window down: it ends at the newest entry left (so a sparse index, a
    /// worker's few statements among a million, skips its empty stretches instead of reading
    /// them window by window).
    fn fill(&mut self) -> Result<(), DbError> {
        let Some(newest) = self.source.newest_below(&self.tree, self.below) else {
            self.below = 0;
            return Ok(());
        };
        let top = newest?.saturating_add(1);
        let low = top.saturating_sub(self.window);
        self.found = self
            .source
            .between(&self.tree, low, top)
            .collect::<Result<_, _>>()?;
        self.below = low;
        self.window = (self.window * 2).min(WIDEST_WINDOW);
        Ok(())
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
            if let Err(err) = self.fill() {
                // An error ends the walk.
                self.below = 0;
                return Some(Err(err));
            }
        }
    }
}
