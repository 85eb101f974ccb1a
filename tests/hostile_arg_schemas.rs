//! Hostile argument schemas in a plugin's `hello`: too large, too deep, too many enum items,
//! `$ref` and `pattern`, anyOf nested to blow up validation. Each is refused at the
//! handshake with a typed error and a `deny` record, and the plugin never becomes an instance;
//! the largest schema the bounds allow validates huge arguments in linear work.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::broker::arg_schema::limits::{MAX_FAN, MAX_SCHEMAS_BYTES};
use plugbox::broker::arg_schema::{CommandSchemas, SchemaError};
use plugbox::engine::LoadError;
use plugbox::ipc::ErrorCode;
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::time::Duration;

/// A plugin that says hello with `schemas` for command `f` (rawwire: no SDK), then serves
/// `f` by answering its argument count, if it is ever welcomed.
fn hostile(schemas_py: &str) -> TestPlugin {
    let main = format!(
        "import rawwire as w\nSCHEMAS = {schemas_py}\n\
         w.send({{'type': 'hello', 'protocol': 1, 'plugin': {{'name': w.NAME, 'version': w.VERSION}}, \
         'commands': ['f'], 'schemas': SCHEMAS}})\n\
         welcome, _ = w.recv()\nassert welcome['type'] == 'welcome', welcome\n\
         while True:\n    h, _ = w.recv()\n    w.send({{'type': 'result', 'id': h['id'], 'result': 'pong' if h['method'] == 'plugbox.ping' else len(h['args'])}})\n"
    );
    TestPlugin::new("hostile", "", &main)
}

/// Loads a hostile plugin and returns the typed cause of the refusal; checks the handshake's
/// `deny` record and that no instance is left.
async fn refused(schemas_py: &str) -> LoadError {
    let te = TestEngine::new();
    let p = hostile(schemas_py);
    let load = tokio::time::timeout(
        Duration::from_secs(60),
        te.engine.spawn_instance(p.path(), &Grants::none()),
    )
    .await
    .expect("no hang");
    let e = match load {
        Err(LoadError::PluginFailed { cause, .. }) => *cause,
        Err(other) => panic!("not a plugin failure: {other}"),
        Ok(_) => panic!("a hostile schema was accepted"),
    };
    assert_eq!(e.step(), "handshake");
    let denied = te
        .events("handshake")
        .into_iter()
        .find(|r| r["decision"] == "deny")
        .expect("deny record");
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .contains("argument schemas")
            || matches!(e, LoadError::Handshake(_))
    );
    assert!(te
        .events("handshake")
        .iter()
        .all(|r| r["decision"] != "allow"));
    let refused = te.events("load_refused");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    e
}

fn schema_error(e: LoadError) -> SchemaError {
    match e {
        LoadError::ArgSchema(s) => s,
        other => panic!("not a schema error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_schema_is_refused() {
    // 300 KiB of descriptions, under the 1 MiB header limit.
    let e = refused("{'f': {'args': {'properties': {f'p{i}': {'description': 'x' * 3000} for i in range(100)}}}}").await;
    assert!(
        matches!(schema_error(e), SchemaError::TooLarge { limit, .. } if limit == MAX_SCHEMAS_BYTES)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_schemas_are_refused() {
    let e = refused("(lambda d: [d.update(s={'items': d['s']}) for _ in range(20)] and {'f': {'args': {'properties': {'x': d['s']}}}})({'s': {'type': 'integer'}})").await;
    assert!(matches!(schema_error(e), SchemaError::TooDeep { .. }));
    // Past the wire's own nesting cap (32), the hello does not even decode.
    let e = refused("(lambda d: [d.update(s={'items': d['s']}) for _ in range(40)] and {'f': {'args': d['s']}})({'s': {}})").await;
    assert!(
        matches!(e, LoadError::Handshake(ref why) if why.contains("deep")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_enum_items_are_refused() {
    let e = refused("{'f': {'args': {'properties': {'x': {'enum': list(range(100000))}}}}}").await;
    assert!(matches!(schema_error(e), SchemaError::TooLarge { .. }));
    // Within the byte bound, the item bound still refuses.
    let e = refused("{'f': {'args': {'properties': {'x': {'enum': list(range(5000))}}}}}").await;
    assert!(matches!(
        schema_error(e),
        SchemaError::TooMany {
            what: "enum items",
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ref_and_pattern_are_refused() {
    let e = refused("{'f': {'args': {'properties': {'x': {'$ref': '#'}}}}}").await;
    assert!(
        matches!(schema_error(e), SchemaError::Unsupported { ref keyword, .. } if keyword == "$ref")
    );
    let e =
        refused("{'f': {'args': {'properties': {'x': {'type': 'string', 'pattern': '^(a+)+$'}}}}}")
            .await;
    assert!(
        matches!(schema_error(e), SchemaError::Unsupported { ref keyword, .. } if keyword == "pattern")
    );
    let e = refused("{'g': {'args': {}}}").await;
    assert!(matches!(schema_error(e), SchemaError::Malformed { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyof_nested_past_the_cost_bound_is_refused() {
    let e = refused("(lambda b: {'f': {'args': {'properties': {'x': {'anyOf': [{'anyOf': [{'anyOf': b}] * 4}] * 4}}}}})([{'type': 'integer'}] * 8)").await;
    assert!(matches!(schema_error(e), SchemaError::TooCostly { .. }));
}

/// An anyOf-heavy schema (nested anyOf, and anyOf under array items) over huge arguments:
/// the work is at most [`MAX_FAN`] visits per value, and the real broker refuses
/// the last element's mismatch before the plugin sees the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_huge_arguments_is_linear() {
    let leaf = "[{'type': 'null'}, {'type': 'string'}, {'type': 'boolean'}]";
    let item = format!("{{'anyOf': [{{'anyOf': {leaf}}}, {{'anyOf': {leaf}}}, {{'type': 'array', 'items': {{'anyOf': {leaf}}}}}]}}");
    let schemas = format!(
        "{{'f': {{'args': {{'properties': {{'v': {{'type': 'array', 'items': {item}}}}}}}}}}}"
    );
    let te = TestEngine::new();
    let p = hostile(&schemas);
    let instance = te
        .engine
        .spawn_instance(p.path(), &Grants::none())
        .await
        .expect("within the bounds");
    let mut values: Vec<Value> = (0..60_000).map(|_| json!([null, "s", true])).collect();
    values.push(json!([1]));
    let args = json!({ "v": values });
    // Counted with the library's own compiled form of the same schema.
    let py_to_json = |s: &str| s.replace('\'', "\"").replace("True", "true");
    let sent: Value = serde_json::from_str(&py_to_json(&schemas)).unwrap();
    let compiled = CommandSchemas::compile(sent.as_object(), &["f".to_owned()]).unwrap();
    let (result, visits) = compiled
        .get("f")
        .unwrap()
        .check_counting(args.as_object().unwrap(), None);
    assert!(result.is_err());
    let value_nodes = 2 + 60_000 * 4 + 2;
    assert!(
        visits <= MAX_FAN * value_nodes,
        "{visits} visits for {value_nodes} values"
    );
    let call = tokio::time::timeout(Duration::from_secs(30), instance.call("f", args)).await;
    let e = call.expect("no hang").expect_err("refused");
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(
        e.message.starts_with("argument \"v[60000]\": "),
        "{}",
        e.message
    );
    // A matching call still reaches the plugin (it answers its argument count).
    let ok = instance
        .call("f", json!({"v": [[null]]}))
        .await
        .expect("good call");
    assert_eq!(ok, plugbox::capability::Reply::Json(json!(1)));
}
