//! Commands with argument schemas, end to end: the Python SDK derives them from type hints,
//! sends them in `hello`, and the broker refuses a call whose arguments do not match with
//! `invalid_argument` naming the field, before anything reaches the plugin (its command never
//! runs, as its own call counter shows), with an audit record; `describe` returns them.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::{CallError, Reply};
use plugbox::engine::Instance;
use plugbox::ipc::ErrorCode;
use plugbox::manifest::Grants;
use serde_json::{json, Map, Value};

/// `add` as in the issue, plus `calls` (how many commands ran), `blob` (a body) and `loose`
/// (**kwargs, no hints).
const PLUGIN: &str = r#"import plugbox
from typing import Literal, TypedDict

RAN = []


class Point(TypedDict):
    x: int
    y: int


@plugbox.command
def add(a: int, b: int = 1) -> int:
    """Add two integers.

    Args:
        a: the first.
        b: the second.
    """
    RAN.append("add")
    return a + b


@plugbox.command
def calls() -> int:
    return len(RAN)


@plugbox.command
def blob(data: bytes, mode: Literal["len", "sum"] = "len") -> int:
    RAN.append("blob")
    return len(data) if mode == "len" else sum(data)


@plugbox.command
def shift(points: list[Point], by: int | None = None) -> list[Point]:
    RAN.append("shift")
    return points


@plugbox.command
def loose(x, **rest):
    RAN.append("loose")
    return [x, rest]
"#;

async fn start(te: &TestEngine) -> (Instance, TestPlugin) {
    let p = TestPlugin::new("typed", "", PLUGIN);
    let instance = te
        .engine
        .spawn_instance(p.path(), &Grants::none())
        .await
        .expect("load");
    (instance, p)
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

async fn refused(instance: &Instance, command: &str, a: Value) -> CallError {
    let e = instance.call(command, a).await.expect_err("refused");
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}");
    e
}

async fn ran(instance: &Instance) -> Value {
    match instance.call("calls", json!({})).await.expect("calls") {
        Reply::Json(v) => v,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_missing_and_unknown_arguments_are_refused_before_the_command_runs() {
    let te = TestEngine::new();
    let (instance, _p) = start(&te).await;
    let e = refused(&instance, "add", json!({"a": "x"})).await;
    assert_eq!(e.message, "argument \"a\": expected integer, got string");
    let e = refused(&instance, "add", json!({"b": 2})).await;
    assert_eq!(e.message, "missing required argument \"a\"");
    let e = refused(&instance, "add", json!({"a": 1, "c": 2})).await;
    assert_eq!(e.message, "unexpected argument \"c\"");
    let e = refused(&instance, "add", json!({"a": 1.5})).await;
    assert_eq!(e.message, "argument \"a\": expected integer, got number");
    let e = refused(
        &instance,
        "shift",
        json!({"points": [{"x": 1, "y": 2}, {"x": 1}]}),
    )
    .await;
    assert_eq!(
        e.message,
        "argument \"points[1]\": missing required property \"y\""
    );
    let e = refused(&instance, "blob", json!({"data": "text"})).await;
    assert_eq!(
        e.message,
        "argument \"data\": expected the binary body, got string"
    );
    // None of them ran: the plugin's own counter is still zero.
    assert_eq!(ran(&instance).await, json!(0));

    // A good call works, and is the first that ran.
    let ok = instance.call("add", json!({"a": 2})).await;
    assert_eq!(ok.expect("add"), Reply::Json(json!(3)));
    let ok = instance
        .call("shift", json!({"points": [{"x": 1, "y": 2}], "by": null}))
        .await;
    assert_eq!(ok.expect("shift"), Reply::Json(json!([{"x": 1, "y": 2}])));
    let ok = instance
        .call_with_body(
            "blob",
            args(json!({"mode": "sum"})),
            "data",
            vec![1u8, 2, 3],
        )
        .await;
    assert_eq!(ok.expect("blob"), Reply::Json(json!(6)));
    let e = refused(&instance, "blob", json!({"mode": "max"})).await;
    assert_eq!(e.message, "missing required argument \"data\"");
    // **kwargs without hints: any other argument; `x` (no hint) any value.
    let ok = instance
        .call("loose", json!({"x": [1], "y": {"z": null}}))
        .await;
    assert_eq!(
        ok.expect("loose"),
        Reply::Json(json!([[1], {"y": {"z": null}}]))
    );
    assert_eq!(ran(&instance).await, json!(4));

    // Each refusal has its `invoke` record: denied by rule arg_schema, no call id (nothing
    // was sent), the field named.
    let refusals: Vec<Value> = te
        .events("invoke")
        .into_iter()
        .filter(|r| r["outcome"] == "invalid_argument")
        .collect();
    assert_eq!(refusals.len(), 7, "{refusals:#?}");
    let first = &refusals[0];
    assert_eq!(first["capability"], "add");
    assert_eq!(first["decision"], "deny");
    assert_eq!(first["rule"], "arg_schema");
    assert_eq!(
        first["reason"],
        "argument \"a\": expected integer, got string"
    );
    assert!(first.get("call_id").is_none_or(Value::is_null), "{first}");
    assert!(first["args_sha256"].as_str().is_some_and(|h| h.len() == 64));
    let stats = instance.stats();
    assert!(
        format!("{stats:?}").contains("invalid_argument"),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_returns_each_commands_schema_and_description() {
    let te = TestEngine::new();
    let p = TestPlugin::new("typed", "", PLUGIN);
    let plugin = te
        .engine
        .load(p.path(), &Grants::none())
        .await
        .expect("load");
    let d = plugin.describe().await.expect("describe");
    assert_eq!(d.commands, ["add", "calls", "blob", "shift", "loose"]);
    assert_eq!(
        d.schemas["add"],
        json!({
            "description": "Add two integers.",
            "args": {"type": "object", "properties": {
                "a": {"type": "integer", "description": "the first."},
                "b": {"type": "integer", "description": "the second.", "default": 1}},
                "required": ["a"], "additionalProperties": false},
            "result": {"type": "integer"}
        })
    );
    assert_eq!(
        d.schemas["blob"]["args"]["properties"]["mode"],
        json!({"enum": ["len", "sum"], "default": "len"})
    );
    assert_eq!(
        d.schemas["blob"]["args"]["properties"]["data"],
        json!({"contentMediaType": "application/octet-stream"})
    );
    let handshake = te
        .events("handshake")
        .into_iter()
        .find(|r| r["decision"] == "allow")
        .expect("handshake record");
    assert_eq!(
        handshake["detail"]["arg_schemas"],
        json!(["add", "blob", "calls", "loose", "shift"])
    );
    // The engine's API refuses as the instance does.
    let e = plugin
        .call("add", json!({"a": "x"}))
        .await
        .expect_err("refused");
    assert_eq!(e.code, ErrorCode::InvalidArgument);
}

/// Over `plugbox serve`: `describe` carries the schemas, a mismatching `call` is answered
/// `invalid_argument` naming the field, a matching one its result.
#[test]
fn serve_describes_schemas_and_answers_invalid_argument() {
    use std::io::{BufRead, BufReader, Write};
    let p = TestPlugin::new("typed", "", PLUGIN);
    let work = tempfile::tempdir().unwrap();
    let mut serve = std::process::Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(work.path().join("audit.jsonl"))
        .arg("--state")
        .arg(work.path().join("state"))
        .arg("--allow-ungranted")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("plugbox serve");
    let mut stdin = serve.stdin.take().unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    // Requests run concurrently: each is sent once the one before it is answered.
    let mut ask = move |r: Value| -> Value {
        writeln!(stdin, "{r}").unwrap();
        loop {
            let v: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            if v["id"] == r["id"] {
                return v;
            }
        }
    };
    let mut answers = std::collections::HashMap::new();
    for (id, r) in [
        json!({"op": "load", "dir": p.path()}),
        json!({"op": "describe", "plugin": "typed"}),
        json!({"op": "call", "plugin": "typed", "command": "add", "args": {"a": "x"}}),
        json!({"op": "call", "plugin": "typed", "command": "add", "args": {"a": 2, "b": 5}}),
        json!({"op": "call", "plugin": "typed", "command": "calls"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = r;
        r["id"] = json!(id + 1);
        answers.insert(id as i64 + 1, ask(r));
    }
    drop(ask); // end of input: serve shuts down
    assert!(serve.wait().unwrap().success());
    assert_eq!(answers[&1]["ok"], true, "{:?}", answers[&1]);
    let described = &answers[&2]["result"];
    assert_eq!(
        described["schemas"]["add"]["description"],
        "Add two integers."
    );
    assert_eq!(
        described["schemas"]["add"]["args"]["required"],
        json!(["a"])
    );
    assert_eq!(
        answers[&3]["error"],
        json!({"code": "invalid_argument", "message": "argument \"a\": expected integer, got string"})
    );
    assert_eq!(answers[&4]["result"], 7);
    assert_eq!(answers[&5]["result"], 1, "only the good call ran");
}
