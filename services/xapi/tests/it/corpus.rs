use serde_json::{json, Value};
use xapi::{Validator, XapiVersion};

/// What a case expects: valid, or invalid with the first violation at this JSON pointer
/// (or below it).
#[derive(Debug, Clone)]
enum Expect {
    Valid,
    InvalidAt(String),
}

struct Case {
    name: String,
    versions: Vec<XapiVersion>,
    statement: Value,
    expect: Expect,
}

/// A place in a statement: a name, the statement it is in, the JSON pointer to it.
type Position = (&'static str, fn() -> Value, &'static str);

const BOTH: [XapiVersion; 2] = [XapiVersion::V1_0_3, XapiVersion::V2_0_0];

fn base() -> Value {
    json!({
        "id": "fd41c918-b88b-4b20-a0a5-a4c32391aaa0",
        "actor": {"objectType": "Agent", "name": "Ann", "mbox": "mailto:ann@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/completed", "display": {"en-US": "completed", "nl-NL": "voltooide"}},
        "object": {
            "objectType": "Activity",
            "id": "https://hub.example/courses/cnc-basics",
            "definition": {
                "name": {"en-US": "CNC basics"},
                "description": {"en-US": "Milling for starters"},
                "type": "http://adlnet.gov/expapi/activities/course",
                "moreInfo": "https://hub.example/courses/cnc-basics/info",
                "extensions": {"https://w3id.org/xapi/llo/extensions/level": 2}
            }
        },
        "result": {
            "score": {"scaled": 0.8, "raw": 80, "min": 0, "max": 100},
            "success": true, "completion": true, "response": "ok", "duration": "PT1H30M",
            "extensions": {"https://w3id.org/xapi/llo/extensions/attempts": 1}
        },
        "context": {
            "registration": "ec531277-b57b-4c15-8d91-d292c5b2b8f7",
            "instructor": {"objectType": "Agent", "mbox": "mailto:teacher@example.org"},
            "team": {"objectType": "Group", "name": "Team A", "member": [{"mbox": "mailto:bob@example.org"}]},
            "contextActivities": {
                "parent": [{"id": "https://hub.example/programmes/metal"}],
                "grouping": {"id": "https://hub.example/hubs/eindhoven"},
                "category": [{"id": "https://w3id.org/xapi/llo/profile"}]
            },
            "revision": "2", "platform": "Leerspoor test", "language": "nl-NL",
            "statement": {"objectType": "StatementRef", "id": "6690e6c9-3ef0-4ed3-8b37-7f3964730bee"},
            "extensions": {
                "https://w3id.org/xapi/llo/extensions/hub": "eindhoven",
                "https://w3id.org/xapi/llo/extensions/company": "KVK-12345678"
            }
        },
        "timestamp": "2026-11-26T10:00:00.000Z",
        "attachments": [{
            "usageType": "http://adlnet.gov/expapi/attachments/certificate",
            "display": {"en-US": "certificate"},
            "description": {"en-US": "the certificate"},
            "contentType": "application/pdf",
            "length": 1234,
            "sha2": "495395e777cd98da653df9615d09c0fd6bb2f8d4788394cd53c56a3bfdcd848a"
        }]
    })
}

fn sub_statement() -> Value {
    let mut statement = base();
    let inner = json!({
        "objectType": "SubStatement",
        "actor": {"objectType": "Agent", "mbox": "mailto:bob@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/attended", "display": {"en-US": "attended"}},
        "object": {"objectType": "Activity", "id": "https://hub.example/sessions/1"},
        "timestamp": "2026-11-26T09:00:00Z",
        "context": {"contextActivities": {"parent": {"id": "https://hub.example/courses/cnc-basics"}}}
    });
    statement["object"] = inner;
    if let Some(context) = statement["context"].as_object_mut() {
        context.remove("revision");
        context.remove("platform");
    }
    statement
}

fn with_context_agents() -> Value {
    let mut statement = base();
    statement["context"]["contextAgents"] = json!([{
        "objectType": "contextAgent",
        "agent": {"objectType": "Agent", "mbox": "mailto:coach@example.org"},
        "relevantTypes": ["https://w3id.org/xapi/llo/roles/coach"]
    }]);
    statement["context"]["contextGroups"] = json!([{
        "objectType": "contextGroup",
        "group": {"objectType": "Group", "mbox": "mailto:team@example.org"},
        "relevantTypes": ["https://w3id.org/xapi/llo/roles/team"]
    }]);
    statement
}

fn set(mut statement: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let target = if parent.is_empty() {
        &mut statement
    } else {
        statement.pointer_mut(parent).expect("parent exists")
    };
    match target {
        Value::Object(map) => {
            map.insert(key.replace("~1", "/").replace("~0", "~"), value);
        }
        Value::Array(items) => {
            let index: usize = key.parse().expect("index");
            items[index] = value;
        }
        _ => panic!("cannot set {pointer}"),
    }
    statement
}

fn remove(mut statement: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let target = if parent.is_empty() {
        &mut statement
    } else {
        statement.pointer_mut(parent).expect("parent exists")
    };
    if let Value::Object(map) = target {
        map.remove(key);
    }
    statement
}

fn valid(name: &str, versions: &[XapiVersion], statement: Value) -> Case {
    Case {
        name: name.to_owned(),
        versions: versions.to_vec(),
        statement,
        expect: Expect::Valid,
    }
}

fn invalid(name: &str, versions: &[XapiVersion], statement: Value, at: &str) -> Case {
    Case {
        name: name.to_owned(),
        versions: versions.to_vec(),
        statement,
        expect: Expect::InvalidAt(at.to_owned()),
    }
}

/// Agent shapes that are valid wherever an Agent may stand.
fn valid_agents() -> Vec<(&'static str, Value)> {
    vec![
        ("mbox", json!({"mbox": "mailto:x@example.org"})),
        (
            "mbox with objectType",
            json!({"objectType": "Agent", "mbox": "mailto:x@example.org"}),
        ),
        (
            "mbox_sha1sum",
            json!({"mbox_sha1sum": "ebd31e95054c018b10727ccffd2ef2ec3a016ee9"}),
        ),
        ("openid", json!({"openid": "https://openid.example.org/x"})),
        (
            "account",
            json!({"account": {"homePage": "https://hub.example", "name": "42"}}),
        ),
        (
            "named account",
            json!({"name": "X", "account": {"homePage": "https://hub.example", "name": "x"}}),
        ),
    ]
}

/// Agent shapes that are invalid wherever an Agent may stand.
fn invalid_agents() -> Vec<(&'static str, Value)> {
    vec![
        ("no identifier", json!({"name": "nobody"})),
        (
            "two identifiers",
            json!({"mbox": "mailto:x@example.org", "openid": "https://openid.example.org/x"}),
        ),
        ("mbox without mailto", json!({"mbox": "x@example.org"})),
        ("mbox without at", json!({"mbox": "mailto:example.org"})),
        ("mbox not a string", json!({"mbox": 42})),
        ("short sha1", json!({"mbox_sha1sum": "ebd31e95054c"})),
        (
            "sha1 not hex",
            json!({"mbox_sha1sum": "zzd31e95054c018b10727ccffd2ef2ec3a016ee9"}),
        ),
        ("openid not an IRI", json!({"openid": "not an iri"})),
        (
            "account without name",
            json!({"account": {"homePage": "https://hub.example"}}),
        ),
        (
            "account without homePage",
            json!({"account": {"name": "42"}}),
        ),
        (
            "account homePage not an IRI",
            json!({"account": {"homePage": "hub", "name": "42"}}),
        ),
        (
            "account with extra key",
            json!({"account": {"homePage": "https://hub.example", "name": "42", "x": 1}}),
        ),
        (
            "unknown property",
            json!({"mbox": "mailto:x@example.org", "age": 30}),
        ),
        (
            "objectType Person",
            json!({"objectType": "Person", "mbox": "mailto:x@example.org"}),
        ),
        (
            "name not a string",
            json!({"name": 7, "mbox": "mailto:x@example.org"}),
        ),
        ("not an object", json!("mailto:x@example.org")),
    ]
}

/// Where an Agent may stand, per statement builder.
fn agent_positions() -> Vec<(Position, &'static [XapiVersion])> {
    vec![
        (("actor", base, "/actor"), &BOTH),
        (("instructor", base, "/context/instructor"), &BOTH),
        (("team member", base, "/context/team/member/0"), &BOTH),
        (("authority", base, "/authority"), &BOTH),
        (
            ("substatement actor", sub_statement, "/object/actor"),
            &BOTH,
        ),
        (
            (
                "context agent",
                with_context_agents,
                "/context/contextAgents/0/agent",
            ),
            &[XapiVersion::V2_0_0],
        ),
    ]
}

fn agent_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for ((position, build, pointer), versions) in agent_positions() {
        for (shape, agent) in valid_agents() {
            cases.push(valid(
                &format!("{position}: {shape}"),
                versions,
                set(build(), pointer, agent),
            ));
        }
        for (shape, agent) in invalid_agents() {
            cases.push(invalid(
                &format!("{position}: {shape}"),
                versions,
                set(build(), pointer, agent),
                pointer,
            ));
        }
    }
    // An Agent as the object needs its objectType.
    for (shape, mut agent) in valid_agents() {
        agent["objectType"] = json!("Agent");
        let statement = remove(set(base(), "/object", agent), "/context/revision");
        let statement = remove(statement, "/context/platform");
        cases.push(valid(&format!("object agent: {shape}"), &BOTH, statement));
    }
    for (shape, agent) in invalid_agents()
        .into_iter()
        .filter(|(_, agent)| agent.is_object())
    {
        let mut agent = agent;
        if agent.get("objectType").is_none() {
            agent["objectType"] = json!("Agent");
        }
        let statement = remove(set(base(), "/object", agent), "/context/revision");
        let statement = remove(statement, "/context/platform");
        cases.push(invalid(
            &format!("object agent: {shape}"),
            &BOTH,
            statement,
            "/object",
        ));
    }
    cases
}

fn group_cases() -> Vec<Case> {
    let anonymous = json!({"objectType": "Group", "member": [{"mbox": "mailto:a@example.org"}]});
    let identified = json!({"objectType": "Group", "account": {"homePage": "https://hub.example", "name": "team"}});
    let identified_with_members = json!({"objectType": "Group", "mbox": "mailto:team@example.org", "member": [{"mbox": "mailto:a@example.org"}]});
    let mut cases = vec![
        valid(
            "actor: anonymous group",
            &BOTH,
            set(base(), "/actor", anonymous.clone()),
        ),
        valid(
            "actor: identified group",
            &BOTH,
            set(base(), "/actor", identified),
        ),
        valid(
            "actor: identified group with members",
            &BOTH,
            set(base(), "/actor", identified_with_members),
        ),
        valid(
            "authority: OAuth pair",
            &BOTH,
            set(
                base(),
                "/authority",
                json!({"objectType": "Group", "member": [
            {"account": {"homePage": "https://lrs.example", "name": "app"}}, {"mbox": "mailto:user@example.org"}]}),
            ),
        ),
        invalid(
            "authority: group of three",
            &BOTH,
            set(
                base(),
                "/authority",
                json!({"objectType": "Group", "member": [
            {"mbox": "mailto:a@example.org"}, {"mbox": "mailto:b@example.org"}, {"mbox": "mailto:c@example.org"}]}),
            ),
            "/authority",
        ),
        invalid(
            "actor: anonymous group without members",
            &BOTH,
            set(
                base(),
                "/actor",
                json!({"objectType": "Group", "name": "x"}),
            ),
            "/actor",
        ),
        invalid(
            "actor: group with two identifiers",
            &BOTH,
            set(
                base(),
                "/actor",
                json!({"objectType": "Group", "mbox": "mailto:t@example.org", "openid": "https://openid.example.org/t"}),
            ),
            "/actor",
        ),
        invalid(
            "actor: group member is a group",
            &BOTH,
            set(
                base(),
                "/actor",
                json!({"objectType": "Group", "member": [anonymous.clone()]}),
            ),
            "/actor/member/0",
        ),
        invalid(
            "actor: member not an array",
            &BOTH,
            set(
                base(),
                "/actor",
                json!({"objectType": "Group", "member": {"mbox": "mailto:a@example.org"}}),
            ),
            "/actor/member",
        ),
        invalid(
            "team: an agent",
            &BOTH,
            set(
                base(),
                "/context/team",
                json!({"mbox": "mailto:a@example.org"}),
            ),
            "/context/team",
        ),
    ];
    for (shape, agent) in invalid_agents()
        .into_iter()
        .filter(|(_, agent)| agent.is_object())
    {
        let group = json!({"objectType": "Group", "member": [agent]});
        cases.push(invalid(
            &format!("group member: {shape}"),
            &BOTH,
            set(base(), "/actor", group),
            "/actor/member/0",
        ));
    }
    cases
}

fn language_map_cases() -> Vec<Case> {
    let positions: [Position; 6] = [
        ("verb display", base, "/verb/display"),
        ("activity name", base, "/object/definition/name"),
        (
            "activity description",
            base,
            "/object/definition/description",
        ),
        ("attachment display", base, "/attachments/0/display"),
        ("attachment description", base, "/attachments/0/description"),
        (
            "substatement verb display",
            sub_statement,
            "/object/verb/display",
        ),
    ];
    let mut cases = Vec::new();
    for (position, build, pointer) in positions {
        for (shape, map) in [
            ("en", json!({"en": "x"})),
            ("zh-Hant-TW", json!({"zh-Hant-TW": "x"})),
            ("und", json!({"und": "x"})),
            ("empty", json!({})),
        ] {
            cases.push(valid(
                &format!("{position}: {shape}"),
                &BOTH,
                set(build(), pointer, map),
            ));
        }
        for (shape, map) in [
            ("bad tag", json!({"not a tag!": "x"})),
            ("underscore tag", json!({"en_US": "x"})),
            ("value not a string", json!({"en-US": 5})),
            ("value null", json!({"en-US": null})),
            ("not an object", json!("completed")),
            ("array", json!(["completed"])),
        ] {
            cases.push(invalid(
                &format!("{position}: {shape}"),
                &BOTH,
                set(build(), pointer, map),
                pointer,
            ));
        }
    }
    cases
}

fn timestamp_cases() -> Vec<Case> {
    let positions: [Position; 3] = [
        ("timestamp", base, "/timestamp"),
        ("stored", base, "/stored"),
        ("substatement timestamp", sub_statement, "/object/timestamp"),
    ];
    let mut cases = Vec::new();
    for (position, build, pointer) in positions {
        for value in [
            "2026-11-26T10:00:00Z",
            "2026-11-26T10:00:00.123456Z",
            "2008-09-15T15:53:00.601+00:00",
            "2026-11-26T10:00:00+05:30",
            "2026-11-26T10:00:00-0800",
        ] {
            cases.push(valid(
                &format!("{position}: {value}"),
                &BOTH,
                set(build(), pointer, json!(value)),
            ));
        }
        for value in [
            json!("should fail"),
            json!("01/011/2015"),
            json!("2008-09-15T15:53:00.601-00"),
            json!("2008-09-15T15:53:00.601-0000"),
            json!("2008-09-15T15:53:00.601-00:00"),
            json!("2026-02-30T10:00:00Z"),
            json!("2026-11-26T25:00:00Z"),
            json!("2026-11-26"),
            json!(1_700_000_000),
        ] {
            cases.push(invalid(
                &format!("{position}: {value}"),
                &BOTH,
                set(build(), pointer, value),
                pointer,
            ));
        }
    }
    cases
}

fn result_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for duration in ["PT1H", "P1D", "PT0.5S", "P1Y2M3DT4H5M6.07S", "P3W", "PT0S"] {
        cases.push(valid(
            &format!("duration {duration}"),
            &BOTH,
            set(base(), "/result/duration", json!(duration)),
        ));
    }
    for duration in [
        "1H", "PT", "P", "P4W1D", "PT1.5H1M", "an hour", "-PT1H", "PTH",
    ] {
        cases.push(invalid(
            &format!("duration {duration}"),
            &BOTH,
            set(base(), "/result/duration", json!(duration)),
            "/result/duration",
        ));
    }
    let scores = [
        (json!({"scaled": 1}), true),
        (json!({"scaled": -1}), true),
        (json!({"raw": 5, "min": 0, "max": 10}), true),
        (json!({"raw": 0, "min": 0}), true),
        (json!({}), true),
        (json!({"scaled": 1.01}), false),
        (json!({"scaled": -1.5}), false),
        (json!({"raw": 11, "min": 0, "max": 10}), false),
        (json!({"raw": -1, "min": 0, "max": 10}), false),
        (json!({"min": 10, "max": 10}), false),
        (json!({"min": 11, "max": 10}), false),
        (json!({"scaled": "0.5"}), false),
        (json!({"percent": 50}), false),
    ];
    for (score, ok) in scores {
        let statement = set(base(), "/result/score", score.clone());
        if ok {
            cases.push(valid(&format!("score {score}"), &BOTH, statement));
        } else {
            cases.push(invalid(
                &format!("score {score}"),
                &BOTH,
                statement,
                "/result/score",
            ));
        }
    }
    for (key, value) in [
        ("success", json!("yes")),
        ("completion", json!(1)),
        ("response", json!(42)),
        ("unknown", json!(true)),
    ] {
        cases.push(invalid(
            &format!("result {key} {value}"),
            &BOTH,
            set(base(), &format!("/result/{key}"), value),
            "/result",
        ));
    }
    cases.push(invalid(
        "result extensions key not an IRI",
        &BOTH,
        set(base(), "/result/extensions", json!({"attempts": 1})),
        "/result/extensions",
    ));
    cases
}

fn iri_and_uuid_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, pointer) in [
        ("verb id", "/verb/id"),
        ("activity id", "/object/id"),
        ("activity type", "/object/definition/type"),
        ("moreInfo", "/object/definition/moreInfo"),
        ("attachment usageType", "/attachments/0/usageType"),
        (
            "parent activity id",
            "/context/contextActivities/parent/0/id",
        ),
    ] {
        cases.push(valid(
            &format!("{name}: urn"),
            &BOTH,
            set(
                base(),
                pointer,
                json!("urn:uuid:fd41c918-b88b-4b20-a0a5-a4c32391aaa0"),
            ),
        ));
        cases.push(valid(
            &format!("{name}: IRI with unicode"),
            &BOTH,
            set(base(), pointer, json!("https://hub.example/cursus/één")),
        ));
        for bad in [
            json!("not an iri"),
            json!("completed"),
            json!(""),
            json!(42),
        ] {
            cases.push(invalid(
                &format!("{name}: {bad}"),
                &BOTH,
                set(base(), pointer, bad),
                pointer,
            ));
        }
    }
    for (name, pointer) in [
        ("id", "/id"),
        ("registration", "/context/registration"),
        ("context statement", "/context/statement/id"),
    ] {
        cases.push(valid(
            &format!("{name}: upper case uuid"),
            &BOTH,
            set(
                base(),
                pointer,
                json!("FD41C918-B88B-4B20-A0A5-A4C32391AAA0"),
            ),
        ));
        for bad in [
            json!("fd41c918-b88b-4b20-a0a5"),
            json!("not-a-uuid"),
            json!(""),
            json!(7),
        ] {
            cases.push(invalid(
                &format!("{name}: {bad}"),
                &BOTH,
                set(base(), pointer, bad),
                pointer,
            ));
        }
    }
    cases.push(invalid(
        "extension key not an IRI",
        &BOTH,
        set(base(), "/context/extensions", json!({"hub": "eindhoven"})),
        "/context/extensions",
    ));
    cases.push(invalid(
        "activity extension key not an IRI",
        &BOTH,
        set(base(), "/object/definition/extensions", json!({"level": 2})),
        "/object/definition/extensions",
    ));
    cases
}

fn structure_cases() -> Vec<Case> {
    let mut cases = vec![
        valid("the base statement", &BOTH, base()),
        valid("a substatement", &BOTH, sub_statement()),
        valid("without id", &BOTH, remove(base(), "/id")),
        valid(
            "minimal",
            &BOTH,
            json!({"actor": {"mbox": "mailto:a@example.org"}, "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"}, "object": {"id": "https://x.example/1"}}),
        ),
        valid("statement ref object", &BOTH, {
            let statement = set(
                base(),
                "/object",
                json!({"objectType": "StatementRef", "id": "6690e6c9-3ef0-4ed3-8b37-7f3964730bee"}),
            );
            remove(remove(statement, "/context/revision"), "/context/platform")
        }),
        valid(
            "voiding statement",
            &BOTH,
            json!({"actor": {"mbox": "mailto:a@example.org"}, "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
            "object": {"objectType": "StatementRef", "id": "6690e6c9-3ef0-4ed3-8b37-7f3964730bee"}}),
        ),
        valid(
            "version 1.0.3 statement",
            &BOTH,
            set(base(), "/version", json!("1.0.3")),
        ),
        valid("version 1.0", &BOTH, set(base(), "/version", json!("1.0"))),
        valid(
            "version 2.0.0 under 2.0",
            &[XapiVersion::V2_0_0],
            set(base(), "/version", json!("2.0.0")),
        ),
        invalid(
            "version 2.0.0 under 1.0.3",
            &[XapiVersion::V1_0_3],
            set(base(), "/version", json!("2.0.0")),
            "/version",
        ),
        valid(
            "context agents under 2.0",
            &[XapiVersion::V2_0_0],
            with_context_agents(),
        ),
        invalid(
            "context agents under 1.0.3",
            &[XapiVersion::V1_0_3],
            with_context_agents(),
            "/context/context",
        ),
        invalid(
            "context agent without objectType",
            &[XapiVersion::V2_0_0],
            remove(with_context_agents(), "/context/contextAgents/0/objectType"),
            "/context/contextAgents/0",
        ),
        invalid(
            "context agent with empty relevantTypes",
            &[XapiVersion::V2_0_0],
            set(
                with_context_agents(),
                "/context/contextAgents/0/relevantTypes",
                json!([]),
            ),
            "/context/contextAgents/0/relevantTypes",
        ),
        invalid(
            "context group holding an agent",
            &[XapiVersion::V2_0_0],
            set(
                with_context_agents(),
                "/context/contextGroups/0/group",
                json!({"mbox": "mailto:a@example.org"}),
            ),
            "/context/contextGroups/0/group",
        ),
        invalid(
            "voiding with an activity object",
            &BOTH,
            set(
                base(),
                "/verb/id",
                json!("http://adlnet.gov/expapi/verbs/voided"),
            ),
            "/object",
        ),
        invalid(
            "nested substatement",
            &BOTH,
            set(
                sub_statement(),
                "/object/object",
                json!({"objectType": "SubStatement",
            "actor": {"mbox": "mailto:a@example.org"}, "verb": {"id": "http://x.example/v"}, "object": {"id": "https://x.example/1"}}),
            ),
            "/object/object",
        ),
        invalid(
            "substatement with id",
            &BOTH,
            set(
                sub_statement(),
                "/object/id",
                json!("fd41c918-b88b-4b20-a0a5-a4c32391aaa0"),
            ),
            "/object",
        ),
        invalid(
            "substatement with stored",
            &BOTH,
            set(
                sub_statement(),
                "/object/stored",
                json!("2026-11-26T10:00:00Z"),
            ),
            "/object",
        ),
        invalid(
            "substatement with version",
            &BOTH,
            set(sub_statement(), "/object/version", json!("1.0.0")),
            "/object",
        ),
        invalid(
            "substatement with authority",
            &BOTH,
            set(
                sub_statement(),
                "/object/authority",
                json!({"mbox": "mailto:a@example.org"}),
            ),
            "/object",
        ),
        invalid(
            "revision with an agent object",
            &BOTH,
            set(
                base(),
                "/object",
                json!({"objectType": "Agent", "mbox": "mailto:a@example.org"}),
            ),
            "/context/revision",
        ),
        invalid(
            "platform with a substatement object",
            &BOTH,
            set(sub_statement(), "/context/platform", json!("x")),
            "/context/platform",
        ),
        invalid(
            "unknown objectType of object",
            &BOTH,
            set(base(), "/object/objectType", json!("Thing")),
            "/object",
        ),
        invalid(
            "bad context language",
            &BOTH,
            set(base(), "/context/language", json!("not a language!")),
            "/context/language",
        ),
        invalid(
            "unknown top-level property",
            &BOTH,
            set(base(), "/foo", json!(1)),
            "",
        ),
        invalid("missing actor", &BOTH, remove(base(), "/actor"), ""),
        invalid("missing verb", &BOTH, remove(base(), "/verb"), ""),
        invalid("missing object", &BOTH, remove(base(), "/object"), ""),
        invalid(
            "verb without id",
            &BOTH,
            remove(base(), "/verb/id"),
            "/verb",
        ),
        invalid(
            "activity without id",
            &BOTH,
            remove(base(), "/object/id"),
            "/object",
        ),
        invalid("statement is an array", &BOTH, json!([base()]), ""),
        invalid("statement is null", &BOTH, Value::Null, ""),
        invalid(
            "bad interactionType",
            &BOTH,
            set(base(), "/object/definition/interactionType", json!("essay")),
            "/object/definition/interactionType",
        ),
        invalid(
            "scale on a choice",
            &BOTH,
            set(
                set(
                    base(),
                    "/object/definition/interactionType",
                    json!("choice"),
                ),
                "/object/definition/scale",
                json!([{"id": "1", "description": {"en-US": "one"}}]),
            ),
            "/object/definition/scale",
        ),
        valid(
            "choices on a choice",
            &BOTH,
            set(
                set(
                    base(),
                    "/object/definition/interactionType",
                    json!("choice"),
                ),
                "/object/definition/choices",
                json!([{"id": "a", "description": {"en-US": "A"}}, {"id": "b"}]),
            ),
        ),
        invalid(
            "duplicate choice ids",
            &BOTH,
            set(
                set(
                    base(),
                    "/object/definition/interactionType",
                    json!("choice"),
                ),
                "/object/definition/choices",
                json!([{"id": "a"}, {"id": "a"}]),
            ),
            "/object/definition/choices/1/id",
        ),
        invalid(
            "correctResponsesPattern without interactionType",
            &BOTH,
            set(
                base(),
                "/object/definition/correctResponsesPattern",
                json!(["a"]),
            ),
            "/object/definition/correctResponsesPattern",
        ),
        invalid(
            "attachment without sha2",
            &BOTH,
            remove(base(), "/attachments/0/sha2"),
            "/attachments/0",
        ),
        invalid(
            "attachment length negative",
            &BOTH,
            set(base(), "/attachments/0/length", json!(-1)),
            "/attachments/0/length",
        ),
        invalid(
            "attachment contentType not a media type",
            &BOTH,
            set(base(), "/attachments/0/contentType", json!("pdf")),
            "/attachments/0/contentType",
        ),
        invalid(
            "attachment sha2 not hex",
            &BOTH,
            set(base(), "/attachments/0/sha2", json!("xyz")),
            "/attachments/0/sha2",
        ),
        invalid(
            "attachments not an array",
            &BOTH,
            set(base(), "/attachments", json!({})),
            "/attachments",
        ),
        invalid(
            "context activities with unknown key",
            &BOTH,
            set(base(), "/context/contextActivities/sibling", json!([])),
            "/context/contextActivities",
        ),
        invalid(
            "context activity without id",
            &BOTH,
            set(
                base(),
                "/context/contextActivities/parent",
                json!([{"definition": {}}]),
            ),
            "/context/contextActivities/parent/0",
        ),
    ];
    for version in ["0.9", "1.1.0", "1", "1.0.", "2.1.0", "latest"] {
        cases.push(invalid(
            &format!("version {version}"),
            &BOTH,
            set(base(), "/version", json!(version)),
            "/version",
        ));
    }
    cases
}

fn llo_cases() -> Vec<Case> {
    const HUB: &str = "/context/extensions/https:~1~1w3id.org~1xapi~1llo~1extensions~1hub";
    const COMPANY: &str = "/context/extensions/https:~1~1w3id.org~1xapi~1llo~1extensions~1company";
    const SKILLS: &str = "/context/extensions/https:~1~1w3id.org~1xapi~1llo~1extensions~1skills";
    const GROUP: &str =
        "/context/extensions/https:~1~1w3id.org~1xapi~1llo~1extensions~1learner-group";
    let skill = "http://data.europa.eu/esco/skill/ccd0a1d9-afda-43d9-b901-96344886e14d";
    let mut cases = vec![
        valid(
            "llo: hub with dash",
            &BOTH,
            set(base(), HUB, json!("den-bosch")),
        ),
        valid("llo: skills", &BOTH, set(base(), SKILLS, json!([skill]))),
        valid("llo: no skills", &BOTH, set(base(), SKILLS, json!([]))),
        valid("llo: youth", &BOTH, set(base(), GROUP, json!("youth"))),
        valid(
            "llo: jobseeker",
            &BOTH,
            set(base(), GROUP, json!("jobseeker")),
        ),
        valid(
            "llo: without extensions",
            &BOTH,
            remove(base(), "/context/extensions"),
        ),
    ];
    for (name, pointer, value) in [
        ("hub empty", HUB, json!("")),
        ("hub with a space", HUB, json!("den bosch")),
        ("hub with a dot", HUB, json!("hub.eindhoven")),
        ("hub a number", HUB, json!(42)),
        ("company empty", COMPANY, json!("")),
        ("company an object", COMPANY, json!({"kvk": "1"})),
        ("skills a string", SKILLS, json!(skill)),
        (
            "skills not ESCO",
            SKILLS,
            json!(["https://example.org/skill/1"]),
        ),
        ("skills repeated", SKILLS, json!([skill, skill])),
        ("learner group unknown", GROUP, json!("student")),
        ("learner group a list", GROUP, json!(["youth"])),
    ] {
        cases.push(invalid(
            &format!("llo: {name}"),
            &BOTH,
            set(base(), pointer, value),
            pointer,
        ));
    }
    cases
}

fn all_cases() -> Vec<Case> {
    [
        llo_cases(),
        agent_cases(),
        group_cases(),
        language_map_cases(),
        timestamp_cases(),
        result_cases(),
        iri_and_uuid_cases(),
        structure_cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[test]
fn every_case_in_the_corpus_gets_its_verdict_at_the_right_place() {
    let validator = Validator::new().expect("schemas compile");
    let cases = all_cases();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for case in &cases {
        for version in &case.versions {
            checked += 1;
            let violations = validator.check(&case.statement, *version);
            let verdict = match (&case.expect, violations.first()) {
                (Expect::Valid, None) => None,
                (Expect::Valid, Some(first)) => Some(format!("expected valid, got {first}")),
                (Expect::InvalidAt(_), None) => Some("expected invalid, got valid".to_owned()),
                (Expect::InvalidAt(at), Some(_)) => {
                    let places: Vec<&str> = violations
                        .iter()
                        .map(|violation| violation.path.as_str())
                        .collect();
                    (!places.iter().any(|path| path.starts_with(at.as_str())))
                        .then(|| format!("expected a violation at {at}, got {places:?}"))
                }
            };
            if let Some(problem) = verdict {
                wrong.push(format!("{} [{version}]: {problem}", case.name));
            }
        }
    }
    assert!(checked >= 400, "the corpus has {checked} checks");
    assert!(
        wrong.is_empty(),
        "{} of {checked} cases wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_violation_names_a_rule_and_a_message() {
    let validator = Validator::new().expect("schemas compile");
    for case in all_cases() {
        for violation in validator.check(&case.statement, XapiVersion::V2_0_0) {
            assert!(!violation.rule.is_empty(), "{}: {violation:?}", case.name);
            assert!(
                !violation.message.is_empty(),
                "{}: {violation:?}",
                case.name
            );
        }
    }
}

#[test]
fn agents_given_alone_follow_the_actor_rules() {
    let validator = Validator::new().expect("schemas compile");
    for (shape, agent) in valid_agents() {
        assert!(
            validator.check_agent(&agent, XapiVersion::V2_0_0).is_ok(),
            "{shape}"
        );
    }
    for (shape, agent) in invalid_agents() {
        assert!(
            validator.check_agent(&agent, XapiVersion::V1_0_3).is_err(),
            "{shape}"
        );
    }
}
