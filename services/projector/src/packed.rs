//! How a summary's state is kept on disk: its fields in order, in postcard's compact binary
//! form, behind a tag byte. Every part reads and writes back the state of each worker, hub and
//! company it touches, and sled copies a state's leaf with every insert, so the projector pays
//! for a state's encoding, decoding and size once per part and several times on disk
//! (BENCHMARKS.md, "Sixteenth round").
//!
//! States written before are JSON, which never starts with the tag: they read as they are,
//! and a database from before has them rewritten at its first open
//! ([`crate::projection::Projection`]'s migrations). Fields are positional and none may be
//! missing (postcard has no defaults), so any change to a state's fields, a new one at the
//! end included, comes with another tag and a migration.

use serde::{de::DeserializeOwned, Serialize};

/// The first byte of a state in the binary form.
const PACKED: u8 = 0x02;

/// A state as it is stored. Fails only for a type postcard cannot encode (a sequence or map
/// whose length is not known up front), which no state is; a test encodes every kind.
pub fn encode<T: Serialize>(state: &T) -> Result<Vec<u8>, String> {
    postcard::to_extend(state, vec![PACKED])
        .map_err(|err| format!("a summary state that does not encode: {err}"))
}

/// A stored state, binary or (written before) JSON; why it does not read as `T` otherwise.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&PACKED, fields)) => postcard::from_bytes(fields)
            .map_err(|err| format!("a binary summary state that does not read: {err}")),
        _ => serde_json::from_slice(bytes).map_err(|err| err.to_string()),
    }
}

/// Whether `bytes` is a state in the binary form (not JSON from before).
pub fn is_packed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&PACKED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{CompanyState, HubState, ProgrammeState, WorkerState};
    use serde_json::json;

    /// A name's digest as a state's JSON form writes it.
    fn digest(name: &str) -> String {
        crate::members::Digest::of(name).text()
    }

    fn worker() -> WorkerState {
        serde_json::from_value(json!({
            "statements": 3, "learning_ms": 5_400_000, "attendance": 1,
            "attended_sessions": {digest("https://example.org/session/1"): 1},
            "attended_ms": 3_600_000,
            "completed": {digest("https://example.org/course/1"): 2}, "passed": {},
            "failed": {digest("https://example.org/course/2"): 1},
            "scaled_sum_micros": -1_700_000_000_000i64, "scaled_count": 2,
            // A hub's name of 16 characters: a name, not a digest's bytes.
            "hubs": {"hub-a": 3, "amsterdam-noord1": 1}, "skills": {"CCCCCCCCCCCCCCCCCCCCCC": 1},
            "months": {"2026-11": {"statements": 3, "learning_ms": 5_400_000}},
            "memberships": {digest("hw5:hub-a"): 3, digest("hm5:hub-a2026-11"): 3}
        }))
        .expect("a worker's state")
    }

    #[test]
    fn a_name_not_digested_yet_is_written_as_its_digest() {
        let course = "https://example.org/course/1";
        let named: WorkerState = serde_json::from_value(json!({
            "statements": 3, "learning_ms": 0, "attendance": 0, "attended_sessions": {},
            "attended_ms": 0, "completed": {course: 1, digest(course): 2}, "passed": {},
            "failed": {}, "scaled_sum_micros": 0, "scaled_count": 0, "hubs": {}, "skills": {},
            "months": {}, "memberships": {}
        }))
        .expect("a worker's state");
        let read: WorkerState = decode(&encode(&named).expect("encoded")).expect("read");
        let mut digested = named.clone();
        assert!(digested.digest_counted());
        assert_eq!(read, digested);
        assert_eq!(
            read.completed
                .keys()
                .map(|key| key.text())
                .collect::<Vec<_>>(),
            [digest(course)]
        );
    }

    #[test]
    fn every_kind_of_state_reads_back_as_written_and_smaller_than_json() {
        let worker = worker();
        let packed = encode(&worker).expect("encoded");
        assert!(is_packed(&packed));
        assert_eq!(decode::<WorkerState>(&packed), Ok(worker.clone()));
        let json = serde_json::to_vec(&worker).expect("json");
        assert!(
            packed.len() * 2 < json.len(),
            "{} of {}",
            packed.len(),
            json.len()
        );

        let hub: HubState = serde_json::from_value(json!({
            "workers": 2, "companies": 1, "statements": 4, "attendance": 1, "attended_ms": 60,
            "sessions": 1, "completions": 2, "passed": 1,
            "months": {"2026-10": {"attendance": 1, "workers": 2}}, "groups": {"youth": 2}, "skills": {"x": 1}
        }))
        .expect("a hub's state");
        assert_eq!(decode::<HubState>(&encode(&hub).expect("encoded")), Ok(hub));
        let company: CompanyState = serde_json::from_value(json!({
            "workers": 2, "statements": 4, "learning_ms": 9, "completed": 1, "skills": 1,
            "skill_workers": {"x": 1}, "months": {"2026-10": {"statements": 4, "skills": {"x": 1}}}
        }))
        .expect("a company's state");
        assert_eq!(
            decode::<CompanyState>(&encode(&company).expect("encoded")),
            Ok(company)
        );
        let programme = ProgrammeState::default();
        assert_eq!(
            decode::<ProgrammeState>(&encode(&programme).expect("encoded")),
            Ok(programme)
        );
    }

    #[test]
    fn a_state_written_as_json_before_reads_as_it_was() {
        let worker = worker();
        let json = serde_json::to_vec(&worker).expect("json");
        assert!(!is_packed(&json));
        assert_eq!(decode::<WorkerState>(&json), Ok(worker));
        // Older JSON without the fields added later reads them as their defaults.
        let old: HubState = decode(br#"{"workers":1,"companies":0,"statements":1,"attendance":0,"attended_ms":0,"sessions":0,"completions":0,"passed":0,"months":{}}"#)
            .expect("an older hub state");
        assert_eq!(old.workers, 1);
        assert!(old.groups.is_empty());
    }

    #[test]
    fn a_state_that_does_not_read_says_so_and_why() {
        let mut cut = encode(&worker()).expect("encoded");
        cut.truncate(cut.len() / 2);
        let err = decode::<WorkerState>(&cut).expect_err("cut short");
        assert!(
            err.starts_with("a binary summary state that does not read"),
            "{err}"
        );
        assert!(decode::<WorkerState>(b"not json").is_err());
        assert!(decode::<WorkerState>(b"").is_err());
    }
}
