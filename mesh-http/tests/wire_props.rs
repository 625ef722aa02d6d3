//! Property tests of the request wire format: whatever bytes arrive as a `/call` or `/cast`
//! body, parsing answers `bad_request` or a request, never panics; and every valid request
//! survives the trip through its JSON (as a hop sends it) unchanged.

use std::time::Duration;

use mesh_actix::{ErrorCode, MeshError, Request};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Any JSON value, a few levels deep; with `floats`, numbers that are not integers too (which
/// JSON text need not bring back bit for bit, so round trips go without).
fn json_value_with(floats: bool) -> impl Strategy<Value = Value> {
    let float = any::<f64>().prop_map(move |f| if floats { json!(f) } else { Value::Null });
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        float,
        ".{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    json_value_with(true)
}

/// A body shaped like a request: the known fields (and a stray one) with values of any type.
fn request_like() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just("module"),
        Just("id"),
        Just("capability"),
        Just("payload"),
        Just("init_arg"),
        Just("timeout_ms"),
        Just("paylod"),
    ];
    prop::collection::btree_map(field, json_value(), 0..7)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn refused_as_bad_request(result: Result<Request, MeshError>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert_eq!(e.code(), ErrorCode::BadRequest, "{}", e);
    }
    Ok(())
}

proptest! {
    // Failures print their minimal input; nothing is written next to the sources.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_parse_or_are_a_bad_request(body in prop::collection::vec(any::<u8>(), 0..256)) {
        refused_as_bad_request(Request::from_json(&body))?;
    }

    #[test]
    fn any_json_parses_or_is_a_bad_request(body in prop_oneof![json_value(), request_like()]) {
        refused_as_bad_request(Request::from_json(body.to_string().as_bytes()))?;
    }

    #[test]
    fn a_valid_request_survives_its_json(
        module in "[A-Za-z][A-Za-z0-9_]{0,254}",
        id in "\\PC{1,64}",
        capability in "\\PC{1,32}",
        payload in json_value_with(false),
        init_arg in proptest::option::of(json_value_with(false)),
        timeout_ms in proptest::option::of(1u64..=3_600_000),
    ) {
        let mut request = Request::new(module, id, capability).unwrap().with_payload(payload);
        if let Some(init_arg) = init_arg {
            request = request.with_init_arg(init_arg);
        }
        if let Some(ms) = timeout_ms {
            request = request.with_timeout(Duration::from_millis(ms));
        }
        let wire = request.to_json(None).to_string();
        // An `init_arg` of `null` travels as none at all.
        if request.init_arg == Some(Value::Null) {
            request.init_arg = None;
        }
        prop_assert_eq!(Request::from_json(wire.as_bytes()).unwrap(), request);
    }
}
