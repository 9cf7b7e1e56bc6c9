//! The layout of the store's sled tree. Everything lives in one tree so that one message's
//! writes (statements, indexes, the applied sequence, the outbox) are one atomic batch.
//! Keys are a one-byte prefix and fixed-width big-endian numbers, so range scans are ordered.

use uuid::Uuid;

/// `R` + position(8) -> [`crate::db::Record`] as JSON: the statements in the order of
/// `stored` (the `more` cursor is a position), written where the tree ends, so a page of
/// consecutive statements is a few neighbouring pages of sled and an index entry leads to
/// its record in one lookup.
pub const RECORD: u8 = b'R';
/// `s` + uuid(16) -> position(8): where the statement with this id is.
pub const STATEMENT: u8 = b's';
/// `p` + position(8) -> uuid(16), and `s` + uuid(16) -> record JSON: the layout before
/// [`RECORD`], moved at open (see [`crate::db`]'s `move_records`).
pub const POSITION: u8 = b'p';
/// `I` + index kind(1) + term hash(8) + block(8) -> [`Postings`]: the positions in that block
/// (`position / POSTING_BLOCK`) of the statements indexed under the term. One key per term and
/// block, not per statement: a message of a hundred statements by one credential in one hub
/// writes its authority, verb and hub activity once each, not a hundred times.
pub const POSTING: u8 = b'I';
/// Positions per block of [`POSTING`]: a term in every statement holds 8 KiB per block.
pub const POSTING_BLOCK: u64 = 4096;
/// `i` + index kind(1) + term hash(8) + position(8) -> empty: the index before [`POSTING`],
/// removed at open and rebuilt as postings (see [`crate::db`]'s `rebuild_old_index`).
pub const INDEX: u8 = b'i';
/// `m` + name -> value: the applied `LRS_IN` sequence and counters.
pub const META: u8 = b'm';
/// `v` + sequence(8) -> verdict JSON, for sequences that were not plainly applied.
pub const VERDICT: u8 = b'v';
/// `w` + uuid(16) -> voiding statement uuid(16): a void that arrived before its target.
pub const PENDING_VOID: u8 = b'w';
/// `o` + order(8) -> outbox entry JSON: messages flushed but not yet on LRS_STORED/REJECTED.
pub const OUTBOX: u8 = b'o';
/// `k` + credential key -> [`bus::access::CredentialRecord`] JSON.
pub const CREDENTIAL: u8 = b'k';
/// `H` + hub id -> [`bus::hubs::HubEntry`] JSON: the hub registry.
pub const HUB: u8 = b'H';
/// `l` + entry id(8) -> [`bus::access::AuditEntry`] JSON: the audit log, oldest first.
pub const AUDIT: u8 = b'l';
/// `x` + SHA-2 -> empty: an attachment body no statement uses since an erasure, to be deleted
/// from the attachment bucket (written with the erasure, removed once deleted).
pub const ORPHAN: u8 = b'x';

/// `r` + sequence(8) -> JSON texts: an erasure's `LRS_REJECTED` messages still to be searched
/// for the person and deleted (written with the erasure, removed once done).
pub const REJECTED_SCRUB: u8 = b'r';

pub fn rejected_scrub(sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(REJECTED_SCRUB);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// An erasure part-way through its chunks: its sequence and counts so far.
pub const META_ERASING: &[u8] = b"merasing";

/// Every `LRS_IN` sequence at or below this one is applied (a contiguous watermark).
pub const META_APPLIED: &[u8] = b"mapplied";
/// `a` + sequence(8) -> empty: applied, above the watermark. JetStream may redeliver an
/// earlier message after a later one (a message delivered to a stopped process comes back
/// after `ack_wait`), so "at or below the highest applied" does not mean applied.
pub const APPLIED_ABOVE: u8 = b'a';

pub fn applied_above(sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(APPLIED_ABOVE);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}
pub const META_NEXT_POSITION: &[u8] = b"mnext_position";
pub const META_LAST_STORED: &[u8] = b"mlast_stored";
/// Every position at or below this one has its index entries (see [`crate::indexer`]).
pub const META_INDEXED: &[u8] = b"mindexed";

/// Index kinds: which filter an index entry serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IndexKind {
    /// Every agent anywhere in the statement (serves `agent` with and without `related_agents`).
    RelatedAgent = b'A',
    Verb = b'v',
    /// Every activity anywhere (serves `activity` with and without `related_activities`).
    RelatedActivity = b'C',
    Registration = b'r',
    /// Statements by the SHA-2 of their own attachments.
    Attachment = b'h',
}

pub fn statement(id: &Uuid) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(STATEMENT);
    key.extend_from_slice(id.as_bytes());
    key
}

/// `T` + block(8) -> [`Span`]: the earliest and latest `stored` of the statements ever stored
/// at the positions of that block (`position / SPAN_BLOCK`), and the last position it covers.
/// A query with `since` or `until` skips every block whose statements all lie outside its
/// window (`stored` follows positions, except for imported statements, which keep their own).
pub const STORED_SPAN: u8 = b'T';
/// Positions per block of [`STORED_SPAN`].
pub const SPAN_BLOCK: u64 = 1024;

pub fn stored_span(block: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(STORED_SPAN);
    key.extend_from_slice(&block.to_be_bytes());
    key
}

/// A block's `stored` span, and the last position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub earliest: String,
    pub latest: String,
    pub through: u64,
}

impl Span {
    /// A latest `stored` after every timestamp (RFC 3339 text starts with a digit).
    const OPEN_END: &'static str = "~";

    /// A span no window excludes (for a block with an unreadable record or span).
    pub fn open(through: u64) -> Span {
        Span {
            earliest: String::new(),
            latest: Span::OPEN_END.to_owned(),
            through,
        }
    }

    /// Widens this span to hold `other`.
    pub fn widen(&mut self, other: &Span) {
        if other.earliest < self.earliest {
            self.earliest.clone_from(&other.earliest);
        }
        if other.latest > self.latest {
            self.latest.clone_from(&other.latest);
        }
        self.through = self.through.max(other.through);
    }

    /// Earliest, a zero byte, latest, a zero byte (RFC 3339 text holds none), the position.
    pub fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(self.earliest.len() + self.latest.len() + 10);
        value.extend_from_slice(self.earliest.as_bytes());
        value.push(0);
        value.extend_from_slice(self.latest.as_bytes());
        value.push(0);
        value.extend_from_slice(&self.through.to_be_bytes());
        value
    }

    pub fn decode(value: &[u8]) -> Option<Span> {
        let first = value.iter().position(|byte| *byte == 0)?;
        let rest = &value[first + 1..];
        let second = rest.iter().position(|byte| *byte == 0)?;
        Some(Span {
            earliest: std::str::from_utf8(&value[..first]).ok()?.to_owned(),
            latest: std::str::from_utf8(&rest[..second]).ok()?.to_owned(),
            through: u64_value(&rest[second + 1..])?,
        })
    }
}

pub fn record(position: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(RECORD);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

pub fn position(position: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(POSITION);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// Hashes a term to the fixed width of an index key. Collisions only cost a wasted read:
/// every candidate is checked against the statement itself.
pub fn term_hash(term: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(term.as_bytes())
}

/// Every [`POSTING`] key of one term starts with this.
pub fn posting_prefix(kind: IndexKind, term: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.push(POSTING);
    key.push(kind as u8);
    key.extend_from_slice(&term_hash(term).to_be_bytes());
    key
}

/// The [`POSTING`] key of a term for the block holding `position`.
pub fn posting(kind: IndexKind, term: &str, position: u64) -> Vec<u8> {
    let mut key = posting_prefix(kind, term);
    key.extend_from_slice(&(position / POSTING_BLOCK).to_be_bytes());
    key
}

/// The positions of one [`POSTING`] key: their offsets in the block, two bytes each,
/// big-endian, ascending, no repeats (one set has one encoding, so replicas' digests agree).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Postings(Vec<u16>);

impl Postings {
    /// The offsets of an encoded value; `None` unless it is ascending whole offsets.
    pub fn decode(value: &[u8]) -> Option<Postings> {
        if !value.len().is_multiple_of(2) {
            return None;
        }
        let offsets: Vec<u16> = value
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect();
        let ascending = offsets.windows(2).all(|pair| pair[0] < pair[1]);
        ascending.then_some(Postings(offsets))
    }

    pub fn encode(&self) -> Vec<u8> {
        self.0
            .iter()
            .flat_map(|offset| offset.to_be_bytes())
            .collect()
    }

    /// Adds a position of this key's block; false if it was there.
    pub fn insert(&mut self, position: u64) -> bool {
        let offset = Postings::offset(position);
        // Positions mostly come in order: at the end.
        if self.0.last().is_none_or(|last| *last < offset) {
            self.0.push(offset);
            return true;
        }
        match self.0.binary_search(&offset) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, offset);
                true
            }
        }
    }

    /// Takes a position of this key's block out; false if it was not there.
    pub fn remove(&mut self, position: u64) -> bool {
        match self.0.binary_search(&Postings::offset(position)) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The positions, ascending, given the block the key names.
    pub fn positions(&self, block: u64) -> impl Iterator<Item = u64> + '_ {
        let first = block.saturating_mul(POSTING_BLOCK);
        self.0.iter().map(move |offset| first + u64::from(*offset))
    }

    fn offset(position: u64) -> u16 {
        // POSTING_BLOCK is below 2^16.
        (position % POSTING_BLOCK) as u16
    }
}

pub fn verdict(sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(VERDICT);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

pub fn pending_void(target: &Uuid) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(PENDING_VOID);
    key.extend_from_slice(target.as_bytes());
    key
}

pub fn credential(key: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + key.len());
    bytes.push(CREDENTIAL);
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

pub fn hub(id: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + id.len());
    bytes.push(HUB);
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

pub fn orphan(sha2: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + sha2.len());
    key.push(ORPHAN);
    key.extend_from_slice(sha2.as_bytes());
    key
}

pub fn audit(id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(AUDIT);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn outbox(order: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(OUTBOX);
    key.extend_from_slice(&order.to_be_bytes());
    key
}

/// The trailing big-endian u64 of a key (the position of a `p` or `i` key).
pub fn trailing_u64(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    let bytes: [u8; 8] = key[start..].try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub fn u64_value(bytes: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One set of positions has one encoding whatever the order they came in, and a value
    /// that is not one (odd length, out of order, a repeat) is refused, not misread.
    #[test]
    fn postings_have_one_encoding_and_refuse_what_is_not_one() {
        let block = 3;
        let first = block * POSTING_BLOCK;
        let mut forward = Postings::default();
        let mut shuffled = Postings::default();
        for offset in [0, 1, 7, 4095] {
            assert!(forward.insert(first + offset));
        }
        for offset in [4095, 7, 0, 1, 7] {
            shuffled.insert(first + offset);
        }
        assert!(!shuffled.insert(first + 1), "already there");
        assert_eq!(forward.encode(), shuffled.encode());
        let decoded = Postings::decode(&forward.encode()).expect("decode");
        assert_eq!(
            decoded.positions(block).collect::<Vec<_>>(),
            vec![first, first + 1, first + 7, first + 4095]
        );
        assert!(forward.remove(first + 7));
        assert!(!forward.remove(first + 7));
        assert_eq!(forward.positions(block).count(), 3);
        assert_eq!(Postings::decode(&[0, 1, 0]), None);
        assert_eq!(Postings::decode(&[0, 2, 0, 1]), None);
        assert_eq!(Postings::decode(&[0, 2, 0, 2]), None);
        assert_eq!(Postings::decode(&[]), Some(Postings::default()));
    }
}
