//! The members of a hub's or company's distinct counts (its workers, companies, sessions,
//! completed activities, skills; a hub month's workers), one key each, outside the summary
//! state. A hub of 300,000 workers then loads and writes a state of a few hundred bytes, not
//! the whole set, and a member key goes as soon as its count is zero (an erased worker leaves
//! no key behind).
//!
//! `g` + kind(1) + set(1) + id length(4) + id + qualifier length(4) + qualifier (a month, a
//! learner group, a skill) + member -> count (u64).
//!
//! A set whose members are also counted more finely counts those finer members, not
//! statements ([`Set::COUNTED_BY_FINER`]): a hub's company by its months there, a company's
//! skill by its workers. Its key is then written when a finer member comes or goes, not with
//! every statement (parts of 2,500 statements of the bench's workload write ~2,800 fewer
//! keys of ~18,400).

/// Which distinct set of a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Set {
    HubWorkers,
    HubCompanies,
    HubSessions,
    HubMonthWorkers,
    /// A hub's workers of one learner group (the group in the qualifier slot).
    HubGroupWorkers,
    /// A hub's workers who evidenced one skill (the skill as qualifier).
    HubSkillWorkers,
    /// The same for one month (qualifier: month, a space, the skill).
    HubMonthSkillWorkers,
    /// A company's workers who evidenced one skill.
    CompanySkillWorkers,
    CompanyWorkers,
    CompanyCompleted,
    CompanySkills,
    /// A company's workers who evidenced one skill in one month (qualifier: month, a space,
    /// the skill).
    CompanyMonthSkillWorkers,
    /// The months a company had a statement at a hub (qualifier: the company; member: the
    /// month): its first month there is the first key, for the programme's reach by hub
    /// type and region.
    HubCompanyMonths,
    /// The programme as a whole (id empty): its workers, companies, workers per learner
    /// group (qualifier), workers and companies per month (qualifier), and each company's
    /// months (qualifier: the company; member: the month).
    ProgrammeWorkers,
    ProgrammeCompanies,
    ProgrammeGroupWorkers,
    ProgrammeMonthWorkers,
    /// No longer kept: the same pairs as [`Set::ProgrammeCompanyMonths`], turned around. A
    /// database from before holds its keys until [`crate::projection`] removes them.
    ProgrammeMonthCompanies,
    ProgrammeCompanyMonths,
}

impl Set {
    /// The sets whose members are workers: their counts live in each worker's own state
    /// ([`crate::summary::WorkerState::memberships`]), which every statement loads and writes
    /// anyway, and their member keys only say who belongs (empty values). That took eleven
    /// reads and eleven writes per statement out of the projector's sled batch.
    pub const OF_WORKERS: [Set; 11] = [
        Set::HubWorkers,
        Set::HubMonthWorkers,
        Set::HubGroupWorkers,
        Set::HubSkillWorkers,
        Set::HubMonthSkillWorkers,
        Set::CompanySkillWorkers,
        Set::CompanyWorkers,
        Set::CompanyMonthSkillWorkers,
        Set::ProgrammeWorkers,
        Set::ProgrammeGroupWorkers,
        Set::ProgrammeMonthWorkers,
    ];

    /// The sets counted by finer members (see the module's documentation), each with its
    /// finer set: a finer key's id and qualifier are the coarser member's id and member
    /// (hub, company, month -> hub, company; company, skill, worker -> company, skill).
    pub const COUNTED_BY_FINER: [(Set, Set); 3] = [
        (Set::HubCompanies, Set::HubCompanyMonths),
        (Set::ProgrammeCompanies, Set::ProgrammeCompanyMonths),
        (Set::CompanySkills, Set::CompanySkillWorkers),
    ];

    /// The sets of workers whose member keys something reads: lists narrowed to a hub's
    /// workers (by month too) and to a company's workers, and the programme's regions (a
    /// hub's workers by learner group). The others' members are only counted, in the
    /// workers' states, and have no keys: in the bench's grown workload (four statements a
    /// worker) they were 13 of a worker's 30 member keys (BENCHMARKS.md, the twelfth round).
    /// A hub's workers are not among them: every statement at a hub puts its worker in one of
    /// the hub's learner groups too, so the hub's workers are those of its groups, and their
    /// keys were 808,000 of the projector's 7.3 million at a million statements
    /// (BENCHMARKS.md, the thirty-second round).
    pub const LISTED: [Set; 3] = [
        Set::HubMonthWorkers,
        Set::HubGroupWorkers,
        Set::CompanyWorkers,
    ];

    pub fn of_workers(self) -> bool {
        Set::OF_WORKERS.contains(&self)
    }

    /// Whether a set of workers keeps a key per member (see [`Set::LISTED`]).
    pub fn listed(self) -> bool {
        Set::LISTED.contains(&self)
    }

    fn tag(self) -> (u8, u8) {
        match self {
            Set::HubWorkers => (b'h', b'w'),
            Set::HubCompanies => (b'h', b'c'),
            Set::HubSessions => (b'h', b's'),
            Set::HubMonthWorkers => (b'h', b'm'),
            Set::HubGroupWorkers => (b'h', b'g'),
            Set::HubSkillWorkers => (b'h', b'k'),
            Set::HubMonthSkillWorkers => (b'h', b'K'),
            Set::CompanySkillWorkers => (b'c', b'K'),
            Set::CompanyWorkers => (b'c', b'w'),
            Set::CompanyCompleted => (b'c', b'a'),
            Set::CompanySkills => (b'c', b'k'),
            Set::CompanyMonthSkillWorkers => (b'c', b'M'),
            Set::HubCompanyMonths => (b'h', b'M'),
            Set::ProgrammeWorkers => (b'p', b'w'),
            Set::ProgrammeCompanies => (b'p', b'c'),
            Set::ProgrammeGroupWorkers => (b'p', b'g'),
            Set::ProgrammeMonthWorkers => (b'p', b'm'),
            Set::ProgrammeMonthCompanies => (b'p', b'n'),
            Set::ProgrammeCompanyMonths => (b'p', b'f'),
        }
    }
}

pub const MEMBER: u8 = b'g';

/// The key of `member` in set `set` of summary `id` (and `month`, for month sets).
pub fn key(set: Set, id: &str, month: &str, member: &str) -> Vec<u8> {
    let (kind, tag) = set.tag();
    let mut key = Vec::with_capacity(8 + id.len() + month.len() + member.len());
    key.extend_from_slice(&[MEMBER, kind, tag]);
    key.extend_from_slice(&u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(&u32::try_from(month.len()).unwrap_or(u32::MAX).to_be_bytes());
    key.extend_from_slice(month.as_bytes());
    key.extend_from_slice(member.as_bytes());
    key
}

/// The keys of every member of a set, whatever the summary.
pub fn set_prefix(set: Set) -> Vec<u8> {
    let (kind, tag) = set.tag();
    vec![MEMBER, kind, tag]
}

/// A member key split back into (id, qualifier, member), `None` if it is not one.
pub fn parse(key: &[u8]) -> Option<(&str, &str, &str)> {
    let rest = key.get(3..)?;
    let id_len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let id = std::str::from_utf8(rest.get(4..4 + id_len)?).ok()?;
    let rest = rest.get(4 + id_len..)?;
    let qualifier_len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let qualifier = std::str::from_utf8(rest.get(4..4 + qualifier_len)?).ok()?;
    let member = std::str::from_utf8(rest.get(4 + qualifier_len..)?).ok()?;
    Some((id, qualifier, member))
}

/// The keys of every member of a set start with this (a key without its member).
pub fn prefix(set: Set, id: &str, month: &str) -> Vec<u8> {
    key(set, id, month, "")
}

/// A worker's count in a set of workers, as named in the worker's state: the [`Digest`] of
/// the set's tag, the summary id's length and the id, then the qualifier (unambiguous
/// whatever the id holds).
pub fn slot(set: Set, id: &str, qualifier: &str) -> Digest {
    // The bytes of [`slot_name`], put together without `format!`: a slot is digested for every
    // set of workers a statement touches (naming it with `format!` was a twentieth of the
    // projector's apply under a backlog; BENCHMARKS.md, the forty-seventh round).
    let (kind, tag) = set.tag();
    let mut length = itoa::Buffer::new();
    let digits = length.format(id.len()).as_bytes();
    let mut name = Vec::with_capacity(3 + digits.len() + id.len() + qualifier.len());
    name.extend_from_slice(&[kind, tag]);
    name.extend_from_slice(digits);
    name.push(b':');
    name.extend_from_slice(id.as_bytes());
    name.extend_from_slice(qualifier.as_bytes());
    Digest(xxhash_rust::xxh3::xxh3_128(&name).to_be_bytes())
}

/// What [`slot`] digests (a slot as databases before the digests named it).
#[cfg(test)]
fn slot_name(set: Set, id: &str, qualifier: &str) -> String {
    let (kind, tag) = set.tag();
    format!(
        "{}{}{}:{id}{qualifier}",
        kind as char,
        tag as char,
        id.len()
    )
}

/// How a worker's state names the members of the sets it only counts (its slots in the sets
/// of workers, its sessions and its completed, passed and failed activities): the 128-bit
/// xxh3 of the name, held and written as its 16 bytes and shown as URL-safe base64 in 22
/// characters (a state's JSON form, and the binary form's first version). Those names are read
/// back nowhere, only counted, and a slot such as a hub's month of an ESCO skill is ~100
/// characters: a worker's state is rewritten with every part that touches them, so its size
/// was most of what the projector wrote (BENCHMARKS.md, "Eighth round"). Two names share a
/// digest with a probability of about 2^-128 per pair.
///
/// Held as bytes since the text was decoded with every write of a state, a fifth of the
/// projector's CPU under HTTP batches (BENCHMARKS.md, "Forty-third round"). Ordered as the
/// text sorts, so a state's counts are written in the order they were when they were text
/// and a state's bytes did not change with this (replicas compare their databases' digests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 16]);

/// The 16 bytes of `name`'s [`Digest`] (also what the skills' timestamp keys hold).
pub fn digest_bytes(name: &str) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(name.as_bytes()).to_be_bytes()
}

impl Digest {
    /// The digest of `name`.
    pub fn of(name: &str) -> Digest {
        Digest(digest_bytes(name))
    }

    /// Its text: 22 characters of URL-safe base64.
    pub fn text(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The digest `text` is (what [`Digest::text`] writes), or `None` for any other text. No
    /// name a digest is made of reads as one: slots hold a `:`, and sessions (attended
    /// activities) and activities are IRIs, which the statements' schema requires to have a
    /// scheme and a `:`.
    pub fn parse(text: &str) -> Option<Digest> {
        use base64::Engine as _;
        if text.len() != 22 {
            return None;
        }
        // Room for base64's estimate of what 22 characters hold (18); a digest fills 16.
        let mut bytes = [0; 18];
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(16) => bytes[..16].try_into().ok().map(Digest),
            _ => None,
        }
    }
}

impl Ord for Digest {
    /// As the texts compare: their first differing character is base64's symbol of the first
    /// 6 bits in which the bytes differ, and URL-safe base64's characters do not sort as
    /// their symbols' values ('-' < '0'–'9' < 'A'–'Z' < '_' < 'a'–'z'; values 0–25 are
    /// 'A'–'Z', 26–51 'a'–'z', 52–61 the digits, 62 '-' and 63 '_').
    fn cmp(&self, other: &Digest) -> std::cmp::Ordering {
        fn rank(symbol: u8) -> u8 {
            match symbol {
                0..=25 => symbol + 11,
                26..=51 => symbol + 12,
                52..=61 => symbol - 51,
                62 => 0,
                _ => 37,
            }
        }
        // The text's `index`th character's symbol: 22 of 6 bits, the last one 2 bits and 4
        // zeros.
        fn symbol(bits: u128, index: u32) -> u8 {
            ((bits << (6 * index)) >> 122) as u8
        }
        let (ours, theirs) = (u128::from_be_bytes(self.0), u128::from_be_bytes(other.0));
        match ours ^ theirs {
            0 => std::cmp::Ordering::Equal,
            differ => {
                let index = differ.leading_zeros() / 6;
                rank(symbol(ours, index)).cmp(&rank(symbol(theirs, index)))
            }
        }
    }
}

impl PartialOrd for Digest {
    fn partial_cmp(&self, other: &Digest) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Where the member counts live: the projection, with what a batch changed so far.
pub trait Members {
    type Error;
    /// Adds `sign` to `member`'s count in the set; returns the change in the number of
    /// distinct members (-1, 0 or 1).
    fn change(
        &mut self,
        set: Set,
        id: &str,
        month: &str,
        member: &str,
        sign: i64,
    ) -> Result<i64, Self::Error>;
}

/// Applies `sign` to one member count; the change in distinct members.
pub fn step(count: &mut u64, sign: i64) -> i64 {
    let before = *count;
    *count = if sign > 0 {
        count.saturating_add(1)
    } else if sign < 0 {
        count.saturating_sub(1)
    } else {
        *count
    };
    i64::from(*count > 0) - i64::from(before > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Digests sort as their texts do, and read back from their text.
        #[test]
        fn digests_sort_as_their_texts(
            ours in proptest::array::uniform16(proptest::num::u8::ANY),
            theirs in proptest::array::uniform16(proptest::num::u8::ANY),
            // Most pairs differ in their first bytes: these share a first part.
            shared in 0usize..=16,
        ) {
            let mut theirs = theirs;
            theirs[..shared].copy_from_slice(&ours[..shared]);
            let (ours, theirs) = (Digest(ours), Digest(theirs));
            proptest::prop_assert_eq!(ours.cmp(&theirs), ours.text().cmp(&theirs.text()));
            proptest::prop_assert_eq!(Digest::parse(&ours.text()), Some(ours));
        }
    }

    #[test]
    fn digests_differing_in_any_one_bit_sort_as_their_texts() {
        let base = Digest::of("hw5:hub-a");
        for bit in 0..128 {
            let flipped = Digest((u128::from_be_bytes(base.0) ^ (1 << bit)).to_be_bytes());
            assert_eq!(
                base.cmp(&flipped),
                base.text().cmp(&flipped.text()),
                "bit {bit}"
            );
        }
        assert_eq!(Digest::parse("not a digest"), None);
    }

    proptest::proptest! {
        /// A slot is the digest of its name as [`slot_name`] writes it.
        #[test]
        fn a_slot_is_the_digest_of_its_name(
            set in proptest::sample::select(Set::OF_WORKERS.to_vec()),
            id in ".{0,40}",
            qualifier in ".{0,40}",
            long in proptest::bool::ANY,
        ) {
            // Ids of every number of digits in their length.
            let id = if long { id.repeat(40) } else { id };
            proptest::prop_assert_eq!(
                slot(set, &id, &qualifier),
                Digest::of(&slot_name(set, &id, &qualifier))
            );
        }
    }

    #[test]
    fn a_member_key_splits_back_into_its_parts() {
        let key = key(Set::HubCompanyMonths, "eindhoven", "KVK-1", "2026-03");
        assert_eq!(parse(&key), Some(("eindhoven", "KVK-1", "2026-03")));
        assert!(key.starts_with(&set_prefix(Set::HubCompanyMonths)));
        assert_eq!(parse(b"gh"), None);
    }
}
