use proptest::prelude::*;
use serde_json::Value;
use xapi::{Validator, XapiVersion};

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("mailto:a@example.org".to_owned()),
            Just("Group".to_owned()),
            Just("SubStatement".to_owned()),
            Just("StatementRef".to_owned()),
            Just("http://adlnet.gov/expapi/verbs/voided".to_owned()),
            Just("PT1H".to_owned()),
            ".*",
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
        Just("context".to_owned()),
        Just("result".to_owned()),
        Just("score".to_owned()),
        Just("definition".to_owned()),
        Just("display".to_owned()),
        Just("contextActivities".to_owned()),
        Just("extensions".to_owned()),
        Just("account".to_owned()),
        "[a-z]{1,6}",
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_validator_never_panics_on_any_json(value in arbitrary_json()) {
        let validator = Validator::new().expect("schemas compile");
        for version in XapiVersion::ALL {
            let _ = validator.check(&value, version);
            let _ = validator.check_batch(std::slice::from_ref(&value), version);
        }
    }
}
