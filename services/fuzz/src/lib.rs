//! Fuzz targets: one function per way input reaches Leerspoor from outside, each taking
//! arbitrary bytes and required never to panic (or hang) whatever they are. The same
//! functions run under libFuzzer (`fuzz/`, `deploy/fuzz.sh`, nightly) and, briefly, under
//! proptest in the test suite (`tests/it`), so CI runs every target without nightly.
//!
//! # Layout
//! - [`statement`]: statement bodies through the limits, both validators and what the LRS
//!   does with a statement it stores.
//! - [`multipart`]: `multipart/mixed` bodies and matching their parts to attachments.
//! - [`jws`]: signature attachments.
//! - [`query`]: the query parameters of `GET /xapi/statements`.
//! - [`alternate`]: xAPI 1.0.3's alternate request syntax forms.
//! - [`time`]: durations and timestamps.
//! - [`ingest`]: messages on `LRS_IN` subjects, parsed and applied to a real sled database.

use std::sync::OnceLock;

use serde_json::Value;
use xapi::limits::Limits;
use xapi::{Validator, XapiVersion};

fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| Validator::new().expect("the schemas compile"))
}

fn limits() -> &'static Limits {
    static LIMITS: OnceLock<Limits> = OnceLock::new();
    LIMITS.get_or_init(Limits::default)
}

/// A statement body: limits, schema and rules in both versions, and for each statement what
/// the store does with it (completion, equivalence, index terms, output formats).
pub fn statement(data: &[u8]) {
    let Ok(statements) = xapi::limits::parse_statements(data, limits()) else {
        return;
    };
    for version in XapiVersion::ALL {
        let _ = validator().check_batch(&statements, version);
    }
    for original in &statements {
        let mut stored = original.clone();
        xapi::statement::complete_for_store(
            &mut stored,
            "2026-12-01T00:00:00.000Z",
            &serde_json::json!({"mbox": "mailto:lrs@example.org"}),
            XapiVersion::V2_0_0,
        );
        let _ = xapi::statement::equivalent(&stored, original);
        let _ = xapi::statement::index_terms(&stored);
        let _ = xapi::statement::format_ids(&stored);
        let _ = xapi::statement::format_canonical(&stored, &["nl".to_owned()]);
        let _ = xapi::statement::voided_target(&stored);
        let mut with_id = original.clone();
        let _ = xapi::statement::ensure_id_from(&mut with_id, &[1; 32], 0);
    }
}

/// A multipart body: the first byte says how long the boundary is (taken from the next
/// bytes), the rest is the body.
pub fn multipart(data: &[u8]) {
    let Some((&length, rest)) = data.split_first() else {
        return;
    };
    let length = usize::from(length % 80).min(rest.len());
    let (boundary, body) = rest.split_at(length);
    let boundary = String::from_utf8_lossy(boundary);
    let body = bytes::Bytes::copy_from_slice(body);
    let Ok(parts) = gateway::multipart::parse(&body, &boundary, limits().multipart_parts) else {
        return;
    };
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return;
    };
    let Ok(statements) = xapi::limits::parse_statements(&first.body, limits()) else {
        return;
    };
    if let Ok(bodies) = gateway::attachments::match_parts(&statements, parts.collect()) {
        let _ = gateway::attachments::check_signatures(&statements, &bodies, limits());
    }
}

/// A signature attachment's body, checked against a fixed statement and against the
/// statement its own payload claims to be.
pub fn jws(data: &[u8]) {
    let statement = serde_json::json!({"actor": {"mbox": "mailto:a@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/passed"}, "object": {"id": "https://x.example/a"}});
    let _ = gateway::attachments::check_jws(&statement, data, limits());
    let _ = gateway::attachments::check_jws(&Value::Null, data, limits());
}

/// A query string of `GET /xapi/statements`.
pub fn query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(pairs) = gateway::params::parse_pairs(Some(&text)) {
        let _ = gateway::params::parse_get(pairs, limits().query_limit);
    }
}

/// An alternate-syntax form: the first line is the method, the rest the form body.
pub fn alternate(data: &[u8]) {
    let (method, form) = match data.iter().position(|byte| *byte == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"PUT"[..], data),
    };
    let Ok(method) = axum::http::Method::from_bytes(method) else {
        return;
    };
    let uri: axum::http::Uri = "/xapi/statements".parse().expect("a valid uri");
    let headers = axum::http::HeaderMap::new();
    let _ = gateway::alternate::from_form(method, &uri, &headers, form);
    let _ = gateway::alternate::from_form(axum::http::Method::PUT, &uri, &headers, data);
}

/// Durations and timestamps, and the duration comparison that once panicked.
pub fn time(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = xapi::time::parse_duration_seconds(&text);
    let _ = xapi::time::parse_timestamp(&text);
    let with = serde_json::json!({"result": {"duration": text}, "timestamp": text});
    let _ = xapi::statement::equivalent(&with, &with);
}

/// The store's database for [`ingest`]: one per process, in a folder of the temporary
/// directory named for the process. It is kept in a static, and a static is never dropped, so
/// the folder outlives its process (a `TempDir` here was never removed: one left in `/tmp` by
/// every test run); each process first removes the folders of processes that are gone.
fn database() -> &'static store::db::Db {
    static DB: OnceLock<store::db::Db> = OnceLock::new();
    DB.get_or_init(|| {
        let temp = std::env::temp_dir();
        remove_gone(&temp);
        let dir = temp.join(format!("{DATABASE_PREFIX}{}", std::process::id()));
        // Left by an earlier process with the same id.
        let _ = std::fs::remove_dir_all(&dir);
        store::db::Db::open(&dir).expect("sled opens")
    })
}

/// The name of a [`database`] folder, before its process's id.
const DATABASE_PREFIX: &str = "leerspoor-fuzz-";

/// Removes the [`database`] folders in `temp` whose process is gone (on a system that lists
/// its processes in `/proc`; elsewhere none).
fn remove_gone(temp: &std::path::Path) {
    let processes = std::path::Path::new("/proc");
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    if !processes.join("self").exists() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(process) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DATABASE_PREFIX))
            .filter(|id| !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_digit()))
        else {
            continue;
        };
        if !processes.join(process).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A message as it arrives on `LRS_IN`: the first byte picks the subject (a hub, a tool, the
/// gateway's, erasure), the rest is the payload; it is parsed and applied to a real sled
/// database, and its outbox read back, as the store does.
pub fn ingest(data: &[u8]) {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let subject = match pick % 7 {
        0 => "lrs.in.hub.eindhoven",
        1 => "lrs.in.tool.lms",
        2 => bus::subjects::IN_HTTP,
        3 => bus::subjects::IN_ERASE,
        4 => bus::subjects::IN_DOCUMENTS,
        5 => bus::subjects::IN_CREDENTIALS,
        _ => "lrs.in.hub.",
    };
    let db = database();
    let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let incoming = store::db::Incoming {
        sequence,
        subject,
        payload,
        published: chrono::DateTime::UNIX_EPOCH,
        run: None,
    };
    let parsed = store::ingest::decode(subject, payload, None, None, limits());
    if db.apply(&incoming, parsed, validator()).is_err() {
        return;
    }
    if let Ok(entries) = db.outbox_page(None, None, 64) {
        let keys: Vec<sled::IVec> = entries.into_iter().flat_map(|entry| entry.keys).collect();
        let _ = db.remove_outbox(&keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The database folder of a process that is gone is removed; this process's, and folders
    /// that are not such a database's, stay.
    #[test]
    fn the_databases_of_gone_processes_are_removed() {
        let temp = tempfile::tempdir().expect("temp dir");
        // Above Linux's largest process id (2^22).
        let gone = temp.path().join(format!("{DATABASE_PREFIX}4294967295"));
        let alive = temp
            .path()
            .join(format!("{DATABASE_PREFIX}{}", std::process::id()));
        let others = [
            temp.path().join(format!("{DATABASE_PREFIX}x")),
            temp.path().join(DATABASE_PREFIX),
            temp.path().join("leerspoor-other-1"),
        ];
        for dir in others.iter().chain([&gone, &alive]) {
            std::fs::create_dir(dir).expect("create");
            std::fs::write(dir.join("db"), b"x").expect("write");
        }
        remove_gone(temp.path());
        assert!(!gone.exists());
        assert!(alive.exists());
        for dir in &others {
            assert!(dir.exists(), "{} was removed", dir.display());
        }
    }
}
