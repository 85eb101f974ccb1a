//! The subset, its bounds and the validator's messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::limits::{MAX_ENUM_ITEMS, MAX_FAN};
use super::{CommandSchemas, SchemaError};
use serde_json::{json, Map, Value};

fn schemas(args: Value) -> Result<CommandSchemas, SchemaError> {
    let sent =
        json!({ "cmd": { "description": "d", "args": args, "result": {"type": "integer"} } });
    CommandSchemas::compile(sent.as_object(), &["cmd".to_owned()])
}

fn check(args_schema: Value, args: Value) -> Result<(), String> {
    let s = schemas(args_schema).expect("compiles");
    let args: Map<String, Value> = args.as_object().cloned().expect("object");
    s.get("cmd")
        .expect("cmd")
        .check(&args, None)
        .map_err(|e| e.to_string())
}

fn add() -> Value {
    json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 1}},
           "required": ["a"], "additionalProperties": false})
}

#[test]
fn the_issue_example() {
    assert_eq!(check(add(), json!({"a": 1})), Ok(()));
    assert_eq!(check(add(), json!({"a": 1, "b": 2})), Ok(()));
    assert_eq!(
        check(add(), json!({"a": "x"})).unwrap_err(),
        "argument \"a\": expected integer, got string"
    );
    assert_eq!(
        check(add(), json!({"a": 1.5})).unwrap_err(),
        "argument \"a\": expected integer, got number"
    );
    assert_eq!(
        check(add(), json!({"b": 1})).unwrap_err(),
        "missing required argument \"a\""
    );
    assert_eq!(
        check(add(), json!({"a": 1, "z": 0})).unwrap_err(),
        "unexpected argument \"z\""
    );
}

#[test]
fn nested_paths_name_the_field() {
    let schema = json!({"type": "object", "properties": {"points": {"type": "array", "items": {
        "type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}}}});
    assert_eq!(
        check(schema.clone(), json!({"points": [{"x": 1}, {"x": 2.5}]})),
        Ok(())
    );
    assert_eq!(
        check(schema.clone(), json!({"points": [{"x": 1}, {"x": "no"}]})).unwrap_err(),
        "argument \"points[1].x\": expected number, got string"
    );
    assert_eq!(
        check(schema, json!({"points": [{}]})).unwrap_err(),
        "argument \"points[0]\": missing required property \"x\""
    );
}

#[test]
fn the_rest_of_the_subset() {
    let s = json!({"type": "object", "properties": {
        "mode": {"enum": ["a", "b", 1]}, "k": {"const": 2}, "n": {"type": ["integer", "null"], "minimum": 0, "maximum": 10},
        "s": {"type": "string", "minLength": 1, "maxLength": 3}, "l": {"type": "array", "minItems": 1, "maxItems": 2},
        "d": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "u": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "never": false, "any": true}});
    for good in [
        json!({"mode": "b"}),
        json!({"mode": 1.0}),
        json!({"k": 2}),
        json!({"n": null}),
        json!({"n": 10}),
        json!({"s": "abc"}),
        json!({"l": [1]}),
        json!({"d": {"x": true}}),
        json!({"u": ["a"]}),
        json!({"any": [{}]}),
    ] {
        assert_eq!(check(s.clone(), good.clone()), Ok(()), "{good}");
    }
    for (bad, why) in [
        (json!({"mode": "c"}), "argument \"mode\": not one of the 3 allowed values"),
        (json!({"k": 3}), "argument \"k\": not one of the 1 allowed values"),
        (json!({"n": 11}), "argument \"n\": 11 is more than the maximum 10"),
        (json!({"n": -1}), "argument \"n\": -1 is less than the minimum 0"),
        (json!({"s": "abcd"}), "argument \"s\": 4 characters, at most 3 allowed"),
        (json!({"s": ""}), "argument \"s\": 0 characters, at least 1 expected"),
        (json!({"l": []}), "argument \"l\": 0 items, at least 1 expected"),
        (json!({"d": {"x": 1}}), "argument \"d.x\": expected boolean, got integer"),
        (json!({"u": [1]}), "argument \"u\": matches none of its 2 alternatives (the first: expected string, got array)"),
        (json!({"never": 1}), "argument \"never\": no value is allowed here"),
    ] {
        assert_eq!(check(s.clone(), bad.clone()).unwrap_err(), why, "{bad}");
    }
}

#[test]
fn the_binary_body_fills_only_a_binary_or_unconstrained_argument() {
    let s = schemas(json!({"type": "object", "properties": {"data": {"contentMediaType": "application/octet-stream"},
        "n": {"type": "integer"}}, "required": ["data"], "additionalProperties": false}))
    .unwrap();
    let cmd = s.get("cmd").unwrap();
    assert_eq!(cmd.check(&Map::new(), Some("data")), Ok(()));
    let e = cmd.check(&Map::new(), None).unwrap_err().to_string();
    assert_eq!(e, "missing required argument \"data\"");
    let args = json!({"data": "text"}).as_object().cloned().unwrap();
    let e = cmd.check(&args, None).unwrap_err().to_string();
    assert_eq!(e, "argument \"data\": expected the binary body, got string");
    let e = cmd.check(&Map::new(), Some("n")).unwrap_err().to_string();
    assert_eq!(e, "argument \"n\": does not take the binary body");
    assert!(cmd.check(&Map::new(), Some("zz")).is_err());
}

#[test]
fn refused_schemas_say_why() {
    for (bad, expect) in [
        (json!({"$ref": "#/x"}), "keyword \"$ref\" is not supported"),
        (
            json!({"type": "string", "pattern": "(a+)+$"}),
            "keyword \"pattern\" is not supported",
        ),
        (
            json!({"format": "email"}),
            "keyword \"format\" is not supported",
        ),
        (json!({"type": "strin"}), "type names one of"),
        (json!({"enum": [[1]]}), "enum and const values are scalars"),
        (json!({"required": ["a", "a"]}), "distinct"),
        (
            json!({"required": ["a"], "additionalProperties": false}),
            "can never be given",
        ),
        (json!({"items": [{}]}), "a schema is an object or a boolean"),
        (json!({"minLength": -1}), "non-negative integer"),
        (json!({"anyOf": []}), "non-empty array"),
        (json!(3), "a schema is an object or a boolean"),
    ] {
        let e = schemas(bad.clone()).unwrap_err().to_string();
        assert!(e.contains(expect), "{bad}: {e}");
    }
    let unknown = json!({"other": {"args": {}}});
    let e = CommandSchemas::compile(unknown.as_object(), &["cmd".to_owned()]).unwrap_err();
    assert!(matches!(e, SchemaError::Malformed { .. }), "{e}");
    let no_args = json!({"cmd": {"description": "x"}});
    assert!(CommandSchemas::compile(no_args.as_object(), &["cmd".to_owned()]).is_err());
}

#[test]
fn bounds_are_typed_errors() {
    let many: Vec<u32> = (0..=MAX_ENUM_ITEMS as u32).collect();
    assert!(matches!(
        schemas(json!({"enum": many})),
        Err(SchemaError::TooMany {
            what: "enum items",
            ..
        })
    ));
    let mut deep = json!({"type": "integer"});
    for _ in 0..20 {
        deep = json!({"items": deep});
    }
    assert!(matches!(schemas(deep), Err(SchemaError::TooDeep { .. })));
    let big = "x".repeat(300 * 1024);
    assert!(matches!(
        schemas(json!({"description": big})),
        Err(SchemaError::TooLarge { .. })
    ));
    // anyOf of anyOf: 16 x 16 schemas would reach one value.
    let inner: Vec<Value> = (0..16).map(|_| json!({"type": "integer"})).collect();
    let outer: Vec<Value> = (0..16).map(|_| json!({"anyOf": inner})).collect();
    assert!(matches!(
        schemas(json!({"anyOf": outer})),
        Err(SchemaError::TooCostly { .. })
    ));
}

#[test]
fn validation_visits_at_most_fan_nodes_per_value() {
    // anyOf nested as far as the fan bound allows, over a large array.
    let leaf: Vec<Value> = vec![
        json!({"type": "string"}),
        json!({"type": "null"}),
        json!({"type": "integer"}),
    ];
    let mid: Vec<Value> = (0..3).map(|_| json!({"anyOf": leaf})).collect();
    let items = json!({"anyOf": [{"anyOf": mid}, {"type": "object"}, {"type": "array", "items": {"anyOf": mid}}]});
    let s = schemas(json!({"properties": {"v": {"type": "array", "items": items}}})).unwrap();
    let values: Vec<Value> = (0..20_000).map(|i| json!([i, null, "s"])).collect();
    let args = json!({"v": values}).as_object().cloned().unwrap();
    let (result, visits) = s.get("cmd").unwrap().check_counting(&args, None);
    assert!(result.is_ok(), "{result:?}");
    let value_nodes = 1 + 20_000 * 4;
    assert!(
        visits <= MAX_FAN * value_nodes,
        "{visits} visits for {value_nodes} values"
    );
}

#[test]
fn commands_without_a_schema_and_hellos_without_schemas() {
    let none = CommandSchemas::compile(None, &["cmd".to_owned()]).unwrap();
    assert!(none.get("cmd").is_none());
    let s = schemas(add()).unwrap();
    assert!(s.get("other").is_none());
    assert_eq!(s.sent()["cmd"]["args"], add());
}
