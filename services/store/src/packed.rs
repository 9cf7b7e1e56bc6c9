//! How a statement's record is kept on disk: compressed with zstd and a dictionary of xAPI's
//! vocabulary, behind a tag byte. A record's JSON is ~1–2 KiB of mostly the same keys and
//! URIs; alone zstd halves it, with the vocabulary it is about a quarter (BENCHMARKS.md,
//! "Eleventh round"). sled rewrites and keeps old copies of every page it changes, so the
//! bytes saved per record are saved several times on disk, and its page cache holds that many
//! more records for reads.
//!
//! Records written before (and any value that does not start with the tag, such as a test's
//! hand-written JSON) are read as they are: JSON never starts with a 0x01 byte. The dictionary
//! is part of the on-disk format: records written with it can only be read with it, so it is
//! never edited; another one would come with another tag.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::OnceLock;

/// The first byte of a record compressed with [`VOCABULARY`].
const PACKED: u8 = 0x01;
/// zstd's level: its fastest regular one; higher levels gain a few per cent on records this
/// small and cost the store's apply thread more.
const LEVEL: i32 = 1;
/// A record is refused beyond this size uncompressed (a corrupt frame header must not make the
/// store allocate without bound): NATS's largest `max_payload`, so no statement came in bigger.
const MOST: usize = 64 * 1024 * 1024;

/// The raw-content dictionary: text that statements' JSON repeats, the most common last (zstd
/// reaches the end of a dictionary most cheaply). Never edit (see above).
const VOCABULARY: &[u8] = br#"{"objectType":"SubStatement","objectType":"StatementRef","objectType":"Group","member":[{"objectType":"Agent","openid":"","mbox_sha1sum":"","account":{"homePage":"https://","name":""}}],"attachments":[{"usageType":"http://adlnet.gov/expapi/attachments/signature","display":{"en-US":""},"contentType":"application/octet-stream","length":,"sha2":"","fileUrl":""}],"interactionType":"choice","correctResponsesPattern":[""],"choices":[{"id":"","description":{"en-US":""}}],"moreInfo":"https://","extensions":{},"response":"","instructor":{"objectType":"Agent","name":"","mbox":"mailto:"},"team":{"objectType":"Group"},"revision":"","platform":"","language":"nl-NL","statement":{"objectType":"StatementRef","id":""},"grouping":[{"id":"https://"}],"other":[{"id":"https://"}],"http://adlnet.gov/expapi/verbs/voided","http://adlnet.gov/expapi/verbs/answered","http://adlnet.gov/expapi/verbs/asked","http://adlnet.gov/expapi/verbs/commented","http://adlnet.gov/expapi/verbs/exited","http://adlnet.gov/expapi/verbs/initialized","http://adlnet.gov/expapi/verbs/interacted","http://adlnet.gov/expapi/verbs/launched","http://adlnet.gov/expapi/verbs/mastered","http://adlnet.gov/expapi/verbs/preferred","http://adlnet.gov/expapi/verbs/progressed","http://adlnet.gov/expapi/verbs/registered","http://adlnet.gov/expapi/verbs/responded","http://adlnet.gov/expapi/verbs/resumed","http://adlnet.gov/expapi/verbs/scored","http://adlnet.gov/expapi/verbs/shared","http://adlnet.gov/expapi/verbs/suspended","http://adlnet.gov/expapi/verbs/terminated","http://adlnet.gov/expapi/verbs/imported","http://adlnet.gov/expapi/verbs/experienced","http://adlnet.gov/expapi/verbs/attempted","http://adlnet.gov/expapi/verbs/failed","http://adlnet.gov/expapi/verbs/passed","http://adlnet.gov/expapi/verbs/completed","http://adlnet.gov/expapi/verbs/attended","http://id.tincanapi.com/verb/earned","http://adlnet.gov/expapi/activities/assessment","http://adlnet.gov/expapi/activities/cmi.interaction","http://adlnet.gov/expapi/activities/lesson","http://adlnet.gov/expapi/activities/meeting","http://adlnet.gov/expapi/activities/module","http://adlnet.gov/expapi/activities/objective","http://adlnet.gov/expapi/activities/performance","http://adlnet.gov/expapi/activities/question","http://adlnet.gov/expapi/activities/simulation","http://adlnet.gov/expapi/activities/course","http://data.europa.eu/esco/skill/","https://w3id.org/xapi/llo/extensions/","https://w3id.org/xapi/","{"statement":{"id":"","actor":{"objectType":"Agent","name":"","mbox":"mailto:"},"verb":{"id":"http://adlnet.gov/expapi/verbs/","display":{"en-US":""}},"object":{"objectType":"Activity","id":"https://","definition":{"name":{"nl-NL":"","en-US":""},"description":{"nl-NL":"","en-US":""},"type":"http://adlnet.gov/expapi/activities/"}},"result":{"score":{"scaled":0.,"raw":,"min":0,"max":100},"success":true,"completion":true,"duration":"PT"},"context":{"registration":"","contextActivities":{"parent":[{"id":"https://","objectType":"Activity"}],"category":[{"id":"http://data.europa.eu/esco/skill/","definition":{"name":{"en":"","nl":""}}}]},"extensions":{"https://w3id.org/xapi/llo/extensions/hub":"","https://w3id.org/xapi/llo/extensions/company":"KVK-","https://w3id.org/xapi/llo/extensions/skills":["http://data.europa.eu/esco/skill/"],"https://w3id.org/xapi/llo/extensions/learner-group":"worker"}},"timestamp":"2026-","stored":"2026-","authority":{"objectType":"Agent","name":"","account":{"homePage":"","name":""}},"version":"1.0.0"},"voided":false,"position":"#;

/// The dictionary prepared for compressing, once per process (`None`: zstd refused it).
fn encoder() -> Option<&'static zstd::dict::EncoderDictionary<'static>> {
    static DICTIONARY: OnceLock<Option<zstd::dict::EncoderDictionary<'static>>> = OnceLock::new();
    DICTIONARY
        .get_or_init(|| zstd::dict::EncoderDictionary::try_copy(VOCABULARY, LEVEL).ok())
        .as_ref()
}

fn decoder() -> Option<&'static zstd::dict::DecoderDictionary<'static>> {
    static DICTIONARY: OnceLock<Option<zstd::dict::DecoderDictionary<'static>>> = OnceLock::new();
    DICTIONARY
        .get_or_init(|| zstd::dict::DecoderDictionary::try_copy(VOCABULARY).ok())
        .as_ref()
}

thread_local! {
    // One context per thread, reused: making one costs more than compressing a record.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// A record's JSON as it is stored: tagged and compressed (the JSON itself, should zstd
/// refuse, which it does not for any input but out of memory).
pub fn pack(json: &[u8]) -> Vec<u8> {
    let compressed = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::with_prepared_dictionary(encoder()?).ok();
        }
        let mut out = slot.as_mut()?.compress(json).ok()?;
        out.insert(0, PACKED);
        Some(out)
    });
    compressed.unwrap_or_else(|| json.to_vec())
}

/// A stored record's JSON: unpacked, or as it is when it was stored without the tag. An
/// error says why the bytes are no record.
pub fn unpack(stored: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let Some((&PACKED, frame)) = stored.split_first() else {
        return Ok(Cow::Borrowed(stored));
    };
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let dictionary = decoder().ok_or("zstd refused the records' dictionary")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_they_went_in() {
        let record = br#"{"statement":{"id":"0d3b5e8e-2a1c-4f0b-9a51-6c1f0e0a7b11","actor":{"objectType":"Agent","mbox":"mailto:a@example.org"},"verb":{"id":"http://adlnet.gov/expapi/verbs/completed"},"object":{"id":"https://hub.example/a"}},"voided":false,"position":7}"#;
        let packed = pack(record);
        assert_eq!(packed[0], PACKED);
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
        assert!(unpack(&[PACKED, 1, 2, 3]).is_err());
        assert!(unpack(&packed[..packed.len() - 3]).is_err());
    }
}
