//! How a statement's record is kept on disk: compressed with zstd and a dictionary of xAPI's
//! vocabulary, behind a tag byte that names the dictionary. A record's JSON is ~1–2 KiB of
//! mostly the same keys and URIs; alone zstd halves it, with the vocabulary it is about a
//! quarter (BENCHMARKS.md, "Eleventh round"). sled rewrites and keeps old copies of every
//! page it changes, so the bytes saved per record are saved several times on disk, and its
//! page cache holds that many more records for reads.
//!
//! Two dictionaries, one per tag:
//! - [`PACKED_V1`] (records written before the nineteenth round): [`VOCABULARY`] as raw
//!   content. zstd then writes each record's own entropy tables into its frame and builds
//!   them again to read it: decompressing took 22.6% of the store's CPU answering statement
//!   queries, 6.5% building the sequences' tables (BENCHMARKS.md, the nineteenth round).
//! - [`PACKED_V2`] (records written since): the same vocabulary with zstd's entropy tables,
//!   `records-v2.dict`. Records are ~12% smaller, and pack and unpack twice as fast.
//!
//! Records written before packing (and any value that does not start with a tag, such as a
//! test's hand-written JSON) are read as they are: JSON never starts with a 0x01 or 0x02
//! byte. A dictionary is part of the on-disk format: records written with it can only be
//! read with it, so neither is ever edited; another one would come with another tag.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::OnceLock;

/// The first byte of a record compressed with [`VOCABULARY`] as raw content (read only).
const PACKED_V1: u8 = 0x01;
/// The first byte of a record compressed with [`RECORDS_V2`] (what [`pack`] writes).
const PACKED_V2: u8 = 0x02;
/// zstd's level: its fastest regular one; higher levels gain a few per cent on records this
/// small and cost the store's apply thread more.
const LEVEL: i32 = 1;
/// A record is refused beyond this size uncompressed (a corrupt frame header must not make the
/// store allocate without bound): NATS's largest `max_payload`, so no statement came in bigger.
const MOST: usize = 64 * 1024 * 1024;

/// [`VOCABULARY`] (its last 3,506 bytes, unchanged) behind zstd's dictionary header and
/// entropy tables: made once with zstd 1.5.7's `ZDICT_finalizeDictionary` (level 1,
/// dictionary id 0x4C530002) from the records of 3,000 statements of `leerspoor bench`'s LLO
/// workload, whose symbol frequencies the tables hold (no text of theirs). Never made again
/// or edited: another zstd could make other bytes, and records written with these need them.
const RECORDS_V2: &[u8] = include_bytes!("records-v2.dict");

/// The raw-content dictionary of [`PACKED_V1`] records, and the content of [`RECORDS_V2`]: text
/// that statements' JSON repeats, the most common last (zstd reaches the end of a dictionary
/// most cheaply). Never edit (see above).
const VOCABULARY: &[u8] = br#"{"objectType":"SubStatement","objectType":"StatementRef","objectType":"Group","member":[{"objectType":"Agent","openid":"","mbox_sha1sum":"","account":{"homePage":"https://","name":""}}],"attachments":[{"usageType":"http://adlnet.gov/expapi/attachments/signature","display":{"en-US":""},"contentType":"application/octet-stream","length":,"sha2":"","fileUrl":""}],"interactionType":"choice","correctResponsesPattern":[""],"choices":[{"id":"","description":{"en-US":""}}],"moreInfo":"https://","extensions":{},"response":"","instructor":{"objectType":"Agent","name":"","mbox":"mailto:"},"team":{"objectType":"Group"},"revision":"","platform":"","language":"nl-NL","statement":{"objectType":"StatementRef","id":""},"grouping":[{"id":"https://"}],"other":[{"id":"https://"}],"http://adlnet.gov/expapi/verbs/voided","http://adlnet.gov/expapi/verbs/answered","http://adlnet.gov/expapi/verbs/asked","http://adlnet.gov/expapi/verbs/commented","http://adlnet.gov/expapi/verbs/exited","http://adlnet.gov/expapi/verbs/initialized","http://adlnet.gov/expapi/verbs/interacted","http://adlnet.gov/expapi/verbs/launched","http://adlnet.gov/expapi/verbs/mastered","http://adlnet.gov/expapi/verbs/preferred","http://adlnet.gov/expapi/verbs/progressed","http://adlnet.gov/expapi/verbs/registered","http://adlnet.gov/expapi/verbs/responded","http://adlnet.gov/expapi/verbs/resumed","http://adlnet.gov/expapi/verbs/scored","http://adlnet.gov/expapi/verbs/shared","http://adlnet.gov/expapi/verbs/suspended","http://adlnet.gov/expapi/verbs/terminated","http://adlnet.gov/expapi/verbs/imported","http://adlnet.gov/expapi/verbs/experienced","http://adlnet.gov/expapi/verbs/attempted","http://adlnet.gov/expapi/verbs/failed","http://adlnet.gov/expapi/verbs/passed","http://adlnet.gov/expapi/verbs/completed","http://adlnet.gov/expapi/verbs/attended","http://id.tincanapi.com/verb/earned","http://adlnet.gov/expapi/activities/assessment","http://adlnet.gov/expapi/activities/cmi.interaction","http://adlnet.gov/expapi/activities/lesson","http://adlnet.gov/expapi/activities/meeting","http://adlnet.gov/expapi/activities/module","http://adlnet.gov/expapi/activities/objective","http://adlnet.gov/expapi/activities/performance","http://adlnet.gov/expapi/activities/question","http://adlnet.gov/expapi/activities/simulation","http://adlnet.gov/expapi/activities/course","http://data.europa.eu/esco/skill/","https://w3id.org/xapi/llo/extensions/","https://w3id.org/xapi/","{"statement":{"id":"","actor":{"objectType":"Agent","name":"","mbox":"mailto:"},"verb":{"id":"http://adlnet.gov/expapi/verbs/","display":{"en-US":""}},"object":{"objectType":"Activity","id":"https://","definition":{"name":{"nl-NL":"","en-US":""},"description":{"nl-NL":"","en-US":""},"type":"http://adlnet.gov/expapi/activities/"}},"result":{"score":{"scaled":0.,"raw":,"min":0,"max":100},"success":true,"completion":true,"duration":"PT"},"context":{"registration":"","contextActivities":{"parent":[{"id":"https://","objectType":"Activity"}],"category":[{"id":"http://data.europa.eu/esco/skill/","definition":{"name":{"en":"","nl":""}}}]},"extensions":{"https://w3id.org/xapi/llo/extensions/hub":"","https://w3id.org/xapi/llo/extensions/company":"KVK-","https://w3id.org/xapi/llo/extensions/skills":["http://data.europa.eu/esco/skill/"],"https://w3id.org/xapi/llo/extensions/learner-group":"worker"}},"timestamp":"2026-","stored":"2026-","authority":{"objectType":"Agent","name":"","account":{"homePage":"","name":""}},"version":"1.0.0"},"voided":false,"position":"#;

/// The dictionary prepared for compressing, once per process (`None`: zstd refused it).
fn encoder() -> Option<&'static zstd::dict::EncoderDictionary<'static>> {
    static DICTIONARY: OnceLock<Option<zstd::dict::EncoderDictionary<'static>>> = OnceLock::new();
    DICTIONARY
        .get_or_init(|| zstd::dict::EncoderDictionary::try_copy(RECORDS_V2, LEVEL).ok())
        .as_ref()
}

/// The dictionary of records tagged `tag`, prepared for decompressing, once per process.
fn decoder(tag: u8) -> Option<&'static zstd::dict::DecoderDictionary<'static>> {
    static V1: OnceLock<Option<zstd::dict::DecoderDictionary<'static>>> = OnceLock::new();
    static V2: OnceLock<Option<zstd::dict::DecoderDictionary<'static>>> = OnceLock::new();
    let (cell, bytes) = match tag {
        PACKED_V1 => (&V1, VOCABULARY),
        _ => (&V2, RECORDS_V2),
    };
    cell.get_or_init(|| zstd::dict::DecoderDictionary::try_copy(bytes).ok())
        .as_ref()
}

thread_local! {
    // One context per thread, reused: making one costs more than compressing a record.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    // One per dictionary: a context holds the dictionary it was made with.
    static DECOMPRESSORS: RefCell<[Option<zstd::bulk::Decompressor<'static>>; 2]> =
        const { RefCell::new([None, None]) };
}

/// A record's JSON as it is stored: tagged and compressed (the JSON itself, should zstd
/// refuse, which it does not for any input but out of memory).
pub fn pack(json: &[u8]) -> Vec<u8> {
    let compressed = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut compressor =
                zstd::bulk::Compressor::with_prepared_dictionary(encoder()?).ok()?;
            // The tag names the dictionary; its id would take 4 bytes of every record.
            compressor
                .set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))
                .ok()?;
            *slot = Some(compressor);
        }
        let mut out = slot.as_mut()?.compress(json).ok()?;
        out.insert(0, PACKED_V2);
        Some(out)
    });
    compressed.unwrap_or_else(|| json.to_vec())
}

/// A stored record's JSON: unpacked, or as it is when it was stored without a tag. An error
/// says why the bytes are no record.
pub fn unpack(stored: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let (tag, frame) = match stored.split_first() {
        Some((&tag @ (PACKED_V1 | PACKED_V2), frame)) => (tag, frame),
        _ => return Ok(Cow::Borrowed(stored)),
    };
    DECOMPRESSORS.with(|cell| {
        let mut slots = cell.borrow_mut();
        let slot = &mut slots[usize::from(tag == PACKED_V2)];
        if slot.is_none() {
            let dictionary = decoder(tag).ok_or("zstd refused the records' dictionary")?;
            *slot = Some(
                zstd::bulk::Decompressor::with_prepared_dictionary(dictionary)
                    .map_err(|err| format!("zstd: {err}"))?,
            );
        }
        let Some(decompressor) = slot.as_mut() else {
            return Err("zstd: no decompressor".to_owned());
        };
        decompressor
            .decompress(frame, MOST)
            .map(Cow::Owned)
            .map_err(|err| format!("packed record does not unpack: {err}"))
    })
}

/// A stored record packed again with the dictionary [`pack`] uses, when it was kept otherwise
/// (with the first dictionary, or as JSON from before packing) and the new bytes read back as
/// the same JSON; `None` when it needs nothing, or does not unpack (then it stays as it is).
pub fn repacked(stored: &[u8]) -> Option<Vec<u8>> {
    if stored.first() == Some(&PACKED_V2) {
        return None;
    }
    let json = unpack(stored).ok()?;
    let packed = pack(&json);
    let same = packed != stored && unpack(&packed).ok()?.as_ref() == json.as_ref();
    same.then_some(packed)
}

/// A record packed as the store packed them before the second dictionary (tests of reading
/// and compacting stores that hold such records).
#[cfg(test)]
pub(crate) fn pack_v1(json: &[u8]) -> Vec<u8> {
    let dictionary = zstd::dict::EncoderDictionary::copy(VOCABULARY, LEVEL);
    let mut packed = zstd::bulk::Compressor::with_prepared_dictionary(&dictionary)
        .and_then(|mut compressor| compressor.compress(json))
        .expect("compresses");
    packed.insert(0, PACKED_V1);
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_they_went_in() {
        let record = br#"{"statement":{"id":"0d3b5e8e-2a1c-4f0b-9a51-6c1f0e0a7b11","actor":{"objectType":"Agent","mbox":"mailto:a@example.org"},"verb":{"id":"http://adlnet.gov/expapi/verbs/completed"},"object":{"id":"https://hub.example/a"}},"voided":false,"position":7}"#;
        let packed = pack(record);
        assert_eq!(packed[0], PACKED_V2);
        assert!(packed.len() < record.len() / 2, "{} bytes", packed.len());
        assert_eq!(unpack(&packed).as_deref(), Ok(&record[..]));
        for odd in [&b""[..], b"\x01", b"{}", &[0xff; 40][..]] {
            assert_eq!(unpack(&pack(odd)).as_deref(), Ok(odd));
        }
    }

    #[test]
    fn records_from_before_are_read_as_they_are() {
        let plain = br#"{"statement":{},"voided":true,"position":1}"#;
        assert!(matches!(unpack(plain), Ok(Cow::Borrowed(bytes)) if bytes == plain));
        assert_eq!(unpack(b"").as_deref(), Ok(&b""[..]));
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let mut packed = pack(br#"{"statement":{"id":"x"},"voided":false,"position":1}"#);
        for at in 1..packed.len() {
            packed[at] ^= 0x5a;
            // Whatever it says, it says it without panicking; most damage is caught.
            let _ = unpack(&packed);
            packed[at] ^= 0x5a;
        }
        assert!(unpack(&[PACKED_V1, 1, 2, 3]).is_err());
        assert!(unpack(&[PACKED_V2, 1, 2, 3]).is_err());
        assert!(unpack(&packed[..packed.len() - 3]).is_err());
    }

    /// A record as the store packed it before the second dictionary: its frame, made by the
    /// code of that time (zstd level 1, [`VOCABULARY`] as raw content).
    const V1_RECORD: &[u8] = br#"{"statement":{"actor":{"mbox":"mailto:a@example.org","objectType":"Agent"},"id":"0d3b5e8e-2a1c-4f0b-9a51-6c1f0e0a7b11","object":{"id":"https://hub.example/a","objectType":"Activity"},"stored":"2026-12-01T10:00:00.000Z","timestamp":"2026-12-01T10:00:00.000Z","verb":{"display":{"en-US":"completed"},"id":"http://adlnet.gov/expapi/verbs/completed"},"version":"1.0.0"},"voided":false,"position":7}"#;
    const V1_FRAME: [&str; 4] = [
        "28b52ffd608a00950400f244121a80c739dc1a3a6261b414bb19122172c5b7ed7edbc9ef9c04bd3a6f118d6d",
        "64339bf9cc8de92f0ba406c0af2bbd766f085ea5826a77607b26dc64951a8edf5318a00d100479d825031700",
        "2d2e13a83a100438c09fb940fc08a09f37c02d4cd04d2640a902046ec2490b3914320a4a0b76432612828027",
        "59000b5c5e68305f1079089a0b912720cb18216bb0429781",
    ];

    /// [`V1_FRAME`] as the store kept it: behind its tag.
    fn v1_stored() -> Vec<u8> {
        let mut stored = vec![PACKED_V1];
        stored.extend(crate::export::hex_decode(&V1_FRAME.concat()));
        stored
    }

    #[test]
    fn records_packed_with_the_first_dictionary_still_read() {
        assert_eq!(unpack(&v1_stored()).as_deref(), Ok(V1_RECORD));
        // And one packed with the second reads back as well, beside it.
        assert_eq!(unpack(&pack(V1_RECORD)).as_deref(), Ok(V1_RECORD));
    }

    #[test]
    fn records_kept_otherwise_are_repacked_with_the_second_dictionary_only() {
        for stored in [v1_stored(), V1_RECORD.to_vec()] {
            let again = repacked(&stored).expect("repacked");
            assert_eq!(again[0], PACKED_V2);
            assert_eq!(unpack(&again).as_deref(), Ok(V1_RECORD));
        }
        assert_eq!(
            repacked(&pack(V1_RECORD)),
            None,
            "already packed with the second"
        );
        assert_eq!(
            repacked(&[PACKED_V1, 1, 2, 3]),
            None,
            "unreadable: left as it is"
        );
    }

    #[test]
    fn the_second_dictionary_is_the_vocabulary_with_entropy_tables_and_never_changes() {
        // zstd's dictionary magic number and the id it was made with, little-endian.
        assert_eq!(
            RECORDS_V2[..8],
            [0x37, 0xa4, 0x30, 0xec, 0x02, 0x00, 0x53, 0x4c]
        );
        assert!(RECORDS_V2.ends_with(VOCABULARY));
        // The bytes are the format: records written with them need exactly them.
        assert_eq!(RECORDS_V2.len(), 3_643);
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(RECORDS_V2),
            0x467a_db39_0143_1c11,
            "records-v2.dict changed; records written with it would no longer read"
        );
    }

    #[test]
    fn the_second_dictionary_packs_smaller_than_the_first() {
        let record = br#"{"statement":{"actor":{"mbox":"mailto:worker326@example.org","name":"Worker 326","objectType":"Agent"},"authority":{"account":{"homePage":"https://w3id.org/xapi/llo/clients","name":"hub-twente"},"name":"Twente","objectType":"Agent"},"context":{"contextActivities":{"category":[{"definition":{"name":{"en":"operate CNC machines","nl":"CNC-machines bedienen"}},"id":"http://data.europa.eu/esco/skill/ccd0a1d9-afda-43d9-b901-96344886e14d"}]},"extensions":{"https://w3id.org/xapi/llo/extensions/company":"KVK-00000081","https://w3id.org/xapi/llo/extensions/hub":"twente"},"registration":"512ac822-3096-4e50-8dab-96ca01c7c8a4"},"id":"d16434c9-6076-4de6-8278-c3e2b9405481","object":{"definition":{"name":{"en-US":"Lathe safety"}},"id":"https://twente.technohub.example/activities/17","objectType":"Activity"},"result":{"completion":true,"duration":"PT45M","success":true},"stored":"2026-12-04T05:41:38.190Z","timestamp":"2026-07-14T08:00:00.000Z","verb":{"display":{"en-US":"completed"},"id":"http://adlnet.gov/expapi/verbs/completed"},"version":"2.0.0"},"voided":false,"position":100007}"#;
        let (first, second) = (pack_v1(record), pack(record));
        assert_eq!(unpack(&first).as_deref(), Ok(&record[..]));
        // 352 against 418 bytes when this was written.
        assert!(
            second.len() * 10 <= first.len() * 9,
            "second {} bytes, first {}",
            second.len(),
            first.len()
        );
        assert_eq!(unpack(&second).as_deref(), Ok(&record[..]));
    }
}
