//! Every fuzz target, briefly, under proptest: arbitrary bytes, and bytes shaped like what
//! the target expects (JSON statements, multipart bodies, forms), so the run also reaches
//! past the first parser. The long runs are libFuzzer's (`deploy/fuzz.sh`).

use proptest::prelude::*;
use serde_json::{json, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just("mailto:a@example.org".to_owned()),
            Just("http://adlnet.gov/expapi/verbs/voided".to_owned()),
            Just("StatementRef".to_owned()),
            Just("SubStatement".to_owned()),
            Just("Group".to_owned()),
            Just("PT1H".to_owned()),
            Just("éS".to_owned()),
            Just("6690e6c9-3ef0-4ed3-8b37-7f3964730bee".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("actor".to_owned()),
        Just("verb".to_owned()),
        Just("object".to_owned()),
        Just("id".to_owned()),
        Just("objectType".to_owned()),
        Just("mbox".to_owned()),
        Just("member".to_owned()),
        Just("result".to_owned()),
        Just("duration".to_owned()),
        Just("context".to_owned()),
        Just("extensions".to_owned()),
        Just("attachments".to_owned()),
        Just("sha2".to_owned()),
        "[a-z]{1,5}",
    ];
    leaf.prop_recursive(6, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A statement that passes the schema, with one field replaced by anything.
fn almost_valid() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just("actor"), Just("verb"), Just("object"), Just("result"), Just("context")],
        json_value(),
    )
        .prop_map(|(field, value)| {
            let mut statement = json!({"actor": {"mbox": "mailto:a@example.org"},
                "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
                "object": {"id": "https://x.example/1"},
                "result": {"duration": "PT1H"},
                "context": {"extensions": {"https://w3id.org/xapi/llo/extensions/hub": "eindhoven"}}});
            statement[field] = value;
            serde_json::to_vec(&statement).expect("json")
        })
}

fn statement_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>(),
        almost_valid(),
        json_value().prop_map(|value| serde_json::to_vec(&value).expect("json")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn statements_never_panic(data in statement_bytes()) {
        fuzz::statement(&data);
    }

    #[test]
    fn multipart_never_panics(
        data in prop_oneof![
            any::<Vec<u8>>(),
            (statement_bytes(), any::<Vec<u8>>()).prop_map(|(statements, part)| {
                let mut body = vec![3];
                body.extend_from_slice(b"xyz--xyz\r\nContent-Type: application/json\r\n\r\n");
                body.extend_from_slice(&statements);
                body.extend_from_slice(b"\r\n--xyz\r\nX-Experience-API-Hash: 00\r\nContent-Transfer-Encoding: binary\r\n\r\n");
                body.extend_from_slice(&part);
                body.extend_from_slice(b"\r\n--xyz--");
                body
            }),
        ]
    ) {
        fuzz::multipart(&data);
    }

    #[test]
    fn signatures_never_panic(
        data in prop_oneof![
            any::<Vec<u8>>(),
            (statement_bytes(), any::<Vec<u8>>()).prop_map(|(payload, signature)| {
                use base64::Engine as _;
                let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
                format!("{}.{}.{}", encode(br#"{"alg":"RS256"}"#), encode(&payload), encode(&signature)).into_bytes()
            }),
        ]
    ) {
        fuzz::jws(&data);
    }

    #[test]
    fn queries_never_panic(data in prop_oneof![
        any::<Vec<u8>>(),
        "(agent|verb|activity|since|until|limit|cursor|format|statementId|ascending)=[^&]{0,40}(&[a-z]{1,8}=[^&]{0,20}){0,4}"
            .prop_map(String::into_bytes),
    ]) {
        fuzz::query(&data);
    }

    #[test]
    fn alternate_forms_never_panic(data in prop_oneof![
        any::<Vec<u8>>(),
        "(GET|PUT|POST|DELETE|x)\n(content|Authorization|X-Experience-API-Version|If-Match|statementId)=[^&]{0,40}(&[A-Za-z-]{1,12}=[^&]{0,20}){0,4}"
            .prop_map(String::into_bytes),
    ]) {
        fuzz::alternate(&data);
    }

    #[test]
    fn durations_and_timestamps_never_panic(data in prop_oneof![
        any::<Vec<u8>>(),
        "P[0-9.,YMWDTHS€é]{0,16}".prop_map(String::into_bytes),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{0,14}(Z|[+-][0-9:]{0,5})?".prop_map(String::into_bytes),
    ]) {
        fuzz::time(&data);
    }
}

proptest! {
    // Each case writes to sled: fewer of them.
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn ingest_never_panics(subject in any::<u8>(), data in statement_bytes()) {
        let mut message = vec![subject];
        message.extend_from_slice(&data);
        fuzz::ingest(&message);
    }
}
