//! A kiosk's attendance export (CSV) as xAPI `attended` statements.
//!
//! Columns, by header name (case and surrounding spaces ignored, any order, others ignored):
//! `worker` (an e-mail address, or an id of the hub's own, made an account on
//! `account_home_page`), `session` (the session's id at the hub), `check_in`, `check_out`
//! (RFC 3339, or `YYYY-MM-DD HH:MM[:SS]` in this machine's time zone), and optionally
//! `company` (e.g. a KvK number), `name` (the worker's name), `session_name`,
//! `learner_group` (`youth`, `worker` or `jobseeker`).
//!
//! Each row becomes one statement with `result.duration` = check-out − check-in and
//! `timestamp` = check-in. Its id is derived from hub, worker, session and check-in, so
//! importing the same file twice stores each attendance once.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};
use xapi::{Validator, XapiVersion};

/// How rows become statements.
#[derive(Debug, Clone)]
pub struct AttendanceOptions {
    pub hub: String,
    /// The sessions' activity ids: this, then the session id (percent-encoded).
    pub session_base: String,
    /// The homePage of workers identified by an id of the hub's own.
    pub account_home_page: String,
}

impl AttendanceOptions {
    pub fn for_hub(hub: &str) -> AttendanceOptions {
        AttendanceOptions {
            hub: hub.to_owned(),
            session_base: format!("https://w3id.org/xapi/llo/hubs/{hub}/sessions/"),
            account_home_page: format!("https://w3id.org/xapi/llo/hubs/{hub}/workers"),
        }
    }
}

/// A row that became a statement.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The row's line in the file (the header is line 1).
    pub line: u64,
    pub statement: Value,
}

/// A row left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRow {
    pub line: u64,
    pub reason: String,
}

/// What a file became.
#[derive(Debug, Default)]
pub struct Conversion {
    pub statements: Vec<Converted>,
    pub refused: Vec<RefusedRow>,
}

const REQUIRED: [&str; 4] = ["worker", "session", "check_in", "check_out"];
const OPTIONAL: [&str; 4] = ["company", "name", "session_name", "learner_group"];
/// Longer than this, a check-in is more likely a forgotten check-out than a session.
pub const MAX_SESSION_HOURS: i64 = 24;

/// Namespace of the attendance statement ids (UUID v5).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c6c_6f2d_6174_7465_6e64_616e_6365_0001);

/// Reads a whole CSV; a file without the required columns is an error, a bad row is refused.
pub fn convert(
    input: impl std::io::Read,
    options: &AttendanceOptions,
    validator: &Validator,
) -> Result<Conversion, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|err| format!("cannot read the header line: {err}"))?
        .clone();
    let column: HashMap<String, usize> = headers
        .iter()
        .enumerate()
        .map(|(at, name)| (name.trim().to_lowercase().replace([' ', '-'], "_"), at))
        .collect();
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|name| !column.contains_key(*name))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the header line has no {} column{} (it needs {}; optional: {})",
            missing.join(", "),
            if missing.len() > 1 { "s" } else { "" },
            REQUIRED.join(", "),
            OPTIONAL.join(", ")
        ));
    }
    let validator_version = XapiVersion::V2_0_0;
    let mut conversion = Conversion::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (index, record) in reader.records().enumerate() {
        let line = index as u64 + 2;
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                conversion.refused.push(RefusedRow {
                    line,
                    reason: format!("not a CSV row: {err}"),
                });
                continue;
            }
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        let field = |name: &str| {
            column
                .get(name)
                .and_then(|at| record.get(*at))
                .unwrap_or("")
                .to_owned()
        };
        let statement = match statement(&field, options) {
            Ok(statement) => statement,
            Err(reason) => {
                conversion.refused.push(RefusedRow { line, reason });
                continue;
            }
        };
        if let Some(violation) = validator
            .check(&statement, validator_version)
            .into_iter()
            .next()
        {
            conversion.refused.push(RefusedRow {
                line,
                reason: format!("not a valid statement: {violation}"),
            });
            continue;
        }
        let id = statement["id"].as_str().unwrap_or_default().to_owned();
        if let Some(first) = seen.get(&id) {
            conversion.refused.push(RefusedRow {
                line,
                reason: format!("the same worker, session and check-in as line {first}"),
            });
            continue;
        }
        seen.insert(id, line);
        conversion.statements.push(Converted { line, statement });
    }
    Ok(conversion)
}

/// A check-in or check-out time: RFC 3339, or a local date and time of this machine.
pub fn parse_time(text: &str) -> Result<DateTime<FixedOffset>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at);
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return match Local.from_local_datetime(&naive) {
                chrono::LocalResult::Single(at) => Ok(at.fixed_offset()),
                chrono::LocalResult::Ambiguous(..) => Err(format!(
                    "{text:?} happens twice in this machine's time zone (the clock went back); \
                     give the offset (RFC 3339)"
                )),
                chrono::LocalResult::None => Err(format!(
                    "{text:?} does not exist in this machine's time zone (the clock went forward)"
                )),
            };
        }
    }
    Err(format!(
        "{:?} is not a time (RFC 3339, or YYYY-MM-DD HH:MM[:SS])",
        xapi::limits::truncate_text(text, 64)
    ))
}

fn statement(field: &dyn Fn(&str) -> String, options: &AttendanceOptions) -> Result<Value, String> {
    let worker = field("worker");
    if worker.is_empty() {
        return Err("the worker is empty".into());
    }
    let session = field("session");
    if session.is_empty() {
        return Err("the session is empty".into());
    }
    let check_in = parse_time(&field("check_in")).map_err(|err| format!("check_in: {err}"))?;
    let check_out = parse_time(&field("check_out")).map_err(|err| format!("check_out: {err}"))?;
    let seconds = (check_out - check_in).num_seconds();
    if seconds <= 0 {
        return Err(format!(
            "check-out {} is not after check-in {}",
            check_out.to_rfc3339(),
            check_in.to_rfc3339()
        ));
    }
    if seconds > MAX_SESSION_HOURS * 3600 {
        return Err(format!(
            "the session lasts more than {MAX_SESSION_HOURS} hours (a missing check-out?)"
        ));
    }
    let mut actor = Map::new();
    actor.insert("objectType".into(), json!("Agent"));
    if worker.contains('@') {
        let address = worker.strip_prefix("mailto:").unwrap_or(&worker);
        actor.insert("mbox".into(), json!(format!("mailto:{address}")));
    } else {
        actor.insert(
            "account".into(),
            json!({"homePage": options.account_home_page, "name": worker}),
        );
    }
    let name = field("name");
    if !name.is_empty() {
        actor.insert("name".into(), json!(name));
    }
    let mut definition = Map::new();
    definition.insert(
        "type".into(),
        json!("http://adlnet.gov/expapi/activities/meeting"),
    );
    let session_name = field("session_name");
    if !session_name.is_empty() {
        definition.insert("name".into(), json!({"und": session_name}));
    }
    let mut extensions = Map::new();
    extensions.insert(xapi::llo::HUB.into(), json!(options.hub));
    let company = field("company");
    if !company.is_empty() {
        extensions.insert(xapi::llo::COMPANY.into(), json!(company));
    }
    let group = field("learner_group");
    if !group.is_empty() {
        extensions.insert(xapi::llo::LEARNER_GROUP.into(), json!(group));
    }
    let check_in_utc = check_in.with_timezone(&Utc);
    let id = uuid::Uuid::new_v5(
        &ID_NAMESPACE,
        [
            options.hub.as_str(),
            worker.as_str(),
            session.as_str(),
            &check_in_utc.to_rfc3339(),
        ]
        .join("\u{0}")
        .as_bytes(),
    );
    Ok(json!({
        "id": id.to_string(),
        "actor": actor,
        "verb": {
            "id": xapi::llo::VERB_ATTENDED,
            "display": {"en-US": "attended", "nl-NL": "was aanwezig bij"}
        },
        "object": {
            "objectType": "Activity",
            "id": format!("{}{}", options.session_base, encode_segment(&session)),
            "definition": definition,
        },
        "result": {"duration": format!("PT{seconds}S")},
        "timestamp": xapi::time::format_timestamp(check_in_utc),
        "context": {"extensions": extensions},
    }))
}

/// A path segment: unreserved characters as they are, every other byte percent-encoded.
fn encode_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(csv: &str) -> Conversion {
        let validator = Validator::new().expect("schemas");
        convert(
            csv.as_bytes(),
            &AttendanceOptions::for_hub("eindhoven"),
            &validator,
        )
        .expect("a CSV with the columns")
    }

    #[test]
    fn rows_become_attended_statements_with_a_duration() {
        let conversion = run(
            "Worker,Session,Check-In,Check-Out,Company,Name,Session Name,Learner Group\n\
             ann@example.org,cnc-1,2026-03-02T09:00:00+01:00,2026-03-02T12:30:00+01:00,KVK-1,Ann,CNC basics,worker\n\
             w-17,cnc 1/b,2026-03-02T09:00:00Z,2026-03-02T10:00:00Z,,,,\n",
        );
        assert!(conversion.refused.is_empty(), "{:?}", conversion.refused);
        let [first, second] = &conversion.statements[..] else {
            panic!("two statements");
        };
        assert_eq!(first.line, 2);
        let statement = &first.statement;
        assert_eq!(statement["actor"]["mbox"], "mailto:ann@example.org");
        assert_eq!(statement["verb"]["id"], xapi::llo::VERB_ATTENDED);
        assert_eq!(statement["result"]["duration"], "PT12600S");
        assert_eq!(statement["timestamp"], "2026-03-02T08:00:00.000Z");
        assert_eq!(
            statement["context"]["extensions"][xapi::llo::HUB],
            "eindhoven"
        );
        assert_eq!(
            statement["context"]["extensions"][xapi::llo::COMPANY],
            "KVK-1"
        );
        let second = &second.statement;
        assert_eq!(second["actor"]["account"]["name"], "w-17");
        assert!(second["object"]["id"]
            .as_str()
            .expect("id")
            .ends_with("/sessions/cnc%201%2Fb"));
        assert!(second["context"]["extensions"]
            .get(xapi::llo::COMPANY)
            .is_none());
    }

    #[test]
    fn the_same_file_gives_the_same_ids() {
        let csv = "worker,session,check_in,check_out\na@b.nl,s,2026-01-05 10:00,2026-01-05 11:00\n";
        assert_eq!(
            run(csv).statements[0].statement["id"],
            run(csv).statements[0].statement["id"]
        );
    }

    #[test]
    fn bad_rows_are_refused_with_their_line_and_reason() {
        let conversion = run("worker,session,check_in,check_out,learner_group\n\
             ,s,2026-01-05T10:00:00Z,2026-01-05T11:00:00Z,\n\
             a@b.nl,s,yesterday,2026-01-05T11:00:00Z,\n\
             a@b.nl,s,2026-01-05T11:00:00Z,2026-01-05T10:00:00Z,\n\
             a@b.nl,s,2026-01-05T10:00:00Z,2026-01-07T10:00:00Z,\n\
             a@b.nl,s,2026-01-05T10:00:00Z,2026-01-05T11:00:00Z,pensioner\n\
             a@b.nl,s,2026-01-05T10:00:00Z,2026-01-05T11:00:00Z,\n\
             a@b.nl,s,2026-01-05T10:00:00Z,2026-01-05T11:30:00Z,\n");
        let reasons: Vec<(u64, &str)> = conversion
            .refused
            .iter()
            .map(|row| (row.line, row.reason.as_str()))
            .collect();
        assert_eq!(conversion.statements.len(), 1, "{reasons:?}");
        assert_eq!(conversion.statements[0].line, 7);
        let lines: Vec<u64> = reasons.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 8]);
        assert!(reasons[0].1.contains("worker is empty"));
        assert!(reasons[1].1.contains("check_in"));
        assert!(reasons[2].1.contains("not after"));
        assert!(reasons[3].1.contains("24 hours"));
        assert!(reasons[4].1.contains("learner"), "{}", reasons[4].1);
        assert!(reasons[5].1.contains("line 7"));
    }

    #[test]
    fn a_file_without_the_columns_is_an_error() {
        let validator = Validator::new().expect("schemas");
        let err = convert(
            "worker,start\n".as_bytes(),
            &AttendanceOptions::for_hub("h"),
            &validator,
        )
        .expect_err("no session");
        assert!(err.contains("session, check_in, check_out"), "{err}");
    }
}
