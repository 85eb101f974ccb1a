//! The embedding API end to end with real plugins on the Python SDK: grants, typed host
//! capabilities, plugin errors, cancellation, the built-in kv and fs capabilities.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::{typed, CallContext, CallError, Reply};
use plugbox::engine::LoadError;
use plugbox::ipc::ErrorCode;
use plugbox::manifest::{CapabilityGrant, Grants, ManifestError};
use serde_json::json;
use std::time::Duration;

fn none_granted() -> Grants {
    Grants::none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_capabilities_not_granted_refuse_the_load_listing_every_one() {
    let te = TestEngine::new();
    let p = TestPlugin::new(
        "needy",
        "[capabilities]\n\"log\" = {}\n\"kv.get\" = {}\n\"kv.set\" = {}\n\"fs.read\" = { paths = [\"data\"], optional = true }\n",
        "import plugbox\n",
    );
    let grants = none_granted().grant("log", CapabilityGrant::default());
    match te.engine.spawn_instance(p.path(), &grants).await {
        Err(LoadError::Manifest(ManifestError::NotGranted { missing, .. })) => {
            assert_eq!(missing, ["kv.get", "kv.set"])
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("loaded"),
    }
    let refused = te.events("load_refused");
    assert_eq!(refused.len(), 1);
    assert!(refused[0]["reason"]
        .as_str()
        .unwrap()
        .contains("kv.get, kv.set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_capabilities_that_are_not_granted_are_simply_absent() {
    let te = TestEngine::new();
    let p = TestPlugin::new(
        "optional",
        "[capabilities]\n\"log\" = {}\n\"kv.get\" = { optional = true }\n",
        "import plugbox\n@plugbox.command\ndef try_kv():\n    try:\n        plugbox.host.call('kv.get', key='k')\n        return 'allowed'\n    except plugbox.CapabilityDenied as e:\n        return e.code\n",
    );
    let grants = none_granted().grant("log", CapabilityGrant::default());
    let plugin = te
        .engine
        .spawn_instance(p.path(), &grants)
        .await
        .expect("load");
    assert_eq!(
        plugin.call("try_kv", json!({})).await.expect("call"),
        Reply::Json(json!("denied"))
    );
    let handshake = te.events("handshake");
    assert_eq!(handshake[0]["detail"]["capabilities"], json!(["log"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_api_names_both_versions() {
    let te = TestEngine::new();
    let p = TestPlugin::new("future", "", "import plugbox\n");
    let manifest = std::fs::read_to_string(p.path().join("plugbox.toml"))
        .unwrap()
        .replace("api = \"^1\"", "api = \"^2\"");
    std::fs::write(p.path().join("plugbox.toml"), manifest).unwrap();
    let err = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "manifest: plugin.api: future 1.0.0 requires host API ^2, but this host provides 1.0.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_host_capabilities_check_argument_types() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Add {
        a: i64,
        b: i64,
    }
    let te = TestEngine::new();
    te.engine
        .register(
            "math.add",
            typed(|_: CallContext, args: Add| async move { Ok::<_, CallError>(args.a + args.b) }),
        )
        .expect("register");
    let p = TestPlugin::new(
        "adder",
        "[capabilities]\n\"math.add\" = {}\n",
        "import plugbox\n@plugbox.command\ndef run(a, b):\n    try:\n        return plugbox.host.call('math.add', a=a, b=b)\n    except plugbox.PlugboxError as e:\n        return e.code\n",
    );
    let plugin = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    assert_eq!(
        plugin
            .call("run", json!({"a": 2, "b": 40}))
            .await
            .expect("call"),
        Reply::Json(json!(42))
    );
    assert_eq!(
        plugin
            .call("run", json!({"a": "2", "b": 40}))
            .await
            .expect("call"),
        Reply::Json(json!("invalid"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_exception_reaches_the_host_typed_with_its_traceback() {
    let te = TestEngine::new();
    let p = TestPlugin::new("raiser", "", "import plugbox\n@plugbox.command\ndef boom(x):\n    print('stdout is not the channel')\n    raise ValueError(f'bad {x}')\n");
    let plugin = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    let err = plugin
        .call("boom", json!({"x": 7}))
        .await
        .expect_err("raises");
    assert_eq!(err.code, ErrorCode::PluginError);
    assert!(err.message.contains("ValueError: bad 7"), "{err:?}");
    assert!(
        err.traceback
            .as_deref()
            .unwrap_or("")
            .contains("line 5, in boom"),
        "{err:?}"
    );
    let unknown = plugin.call("nope", json!({})).await.expect_err("unknown");
    assert_eq!(unknown.code, ErrorCode::Invalid);
    assert!(te.events("protocol_violation").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_cancels_it_and_the_plugin_stays_usable() {
    let te = TestEngine::new();
    let p = TestPlugin::new("sleeper", "", "import plugbox, time\n@plugbox.command\ndef nap(s):\n    time.sleep(s)\n    return 'woke'\n@plugbox.command\ndef ping2():\n    return 'pong'\n");
    let plugin = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    let dropped = tokio::time::timeout(
        Duration::from_millis(200),
        plugin.call("nap", json!({"s": 2})),
    )
    .await;
    assert!(dropped.is_err(), "the caller gave up");
    assert_eq!(
        plugin.call("ping2", json!({})).await.expect("call"),
        Reply::Json(json!("pong"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        te.events("protocol_violation").is_empty(),
        "a late answer to a cancelled call is not a violation"
    );
    assert!(plugin.exited().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_state_survives_a_restart_and_fs_stays_in_its_root() {
    let te = TestEngine::new();
    let p = TestPlugin::new(
        "stateful",
        "[capabilities]\n\"kv.get\" = {}\n\"kv.set\" = {}\n\"kv.list\" = {}\n\"kv.delete\" = {}\n\"fs.write\" = { paths = [\"out\"], max_bytes = 1024 }\n\"fs.list\" = { paths = [\"out\"] }\n",
        "import plugbox\n@plugbox.command\ndef put(k, v):\n    return plugbox.host.call('kv.set', key=k, value=v)\n@plugbox.command\ndef get(k):\n    return plugbox.host.call('kv.get', key=k)\n@plugbox.command\ndef keys():\n    return plugbox.host.call('kv.list')\n@plugbox.command\ndef save(name, data: bytes):\n    return plugbox.host.call('fs.write', path='out/' + name, data=data)\n@plugbox.command\ndef ls():\n    return plugbox.host.call('fs.list', path='out')\n",
    );
    let first = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    first
        .call("put", json!({"k": "greeting", "v": {"text": "hi", "n": 1}}))
        .await
        .expect("put");
    first
        .call_with_body(
            "save",
            serde_json::Map::from_iter([("name".to_owned(), json!("a.bin"))]),
            "data",
            vec![0, 1, 2, 255],
        )
        .await
        .expect("save");
    let too_big = first
        .call_with_body(
            "save",
            serde_json::Map::from_iter([("name".to_owned(), json!("b.bin"))]),
            "data",
            vec![7; 2048],
        )
        .await;
    assert!(
        matches!(too_big, Err(ref e) if e.code == ErrorCode::PluginError && e.message.contains("LimitExceeded")),
        "{too_big:?}"
    );
    first.shutdown().await;
    let second = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("reload");
    assert_eq!(
        second
            .call("get", json!({"k": "greeting"}))
            .await
            .expect("get"),
        Reply::Json(json!({"text": "hi", "n": 1}))
    );
    assert_eq!(
        second.call("keys", json!({})).await.expect("keys"),
        Reply::Json(json!(["greeting"]))
    );
    // In the plugin's data directory, never its code directory.
    let data = te.engine.data_dir(p.path()).unwrap();
    assert_eq!(
        std::fs::read(data.join("out/a.bin")).unwrap(),
        [0, 1, 2, 255]
    );
    assert!(!p.path().join("out").exists());
    let Reply::Json(listing) = second.call("ls", json!({})).await.expect("ls") else {
        panic!()
    };
    assert_eq!(
        listing,
        json!([{"name": "a.bin", "kind": "file", "size": 4}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_pinned_to_a_code_digest_refuses_changed_code() {
    let te = TestEngine::new();
    let p = TestPlugin::new(
        "pinned",
        "",
        "import plugbox\n@plugbox.command\ndef v():\n    return 1\n",
    );
    let digest = plugbox::manifest::digest::code_digest(p.path()).expect("digest");
    let pinned = Grants::all_requested().pin_digest(&digest);
    let ok = te
        .engine
        .spawn_instance(p.path(), &pinned)
        .await
        .expect("approved code loads");
    ok.shutdown().await;
    std::fs::write(
        p.path().join("main.py"),
        "import plugbox\n@plugbox.command\ndef v():\n    return 2\n",
    )
    .unwrap();
    let err = te
        .engine
        .spawn_instance(p.path(), &pinned)
        .await
        .err()
        .expect("changed code is refused");
    assert!(
        matches!(
            err,
            LoadError::Manifest(ManifestError::DigestMismatch { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&digest), "{err}");
    let refused = te.events("load_refused");
    assert!(refused[0]["reason"]
        .as_str()
        .unwrap()
        .contains("re-approve"));
    assert_ne!(
        refused[0]["plugin"]["digest"].as_str(),
        Some(digest.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_caps_live_plugins_and_counts_each_ones_calls() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = plugbox::engine::EngineConfig::new(
        dir.path().join("audit.jsonl"),
        dir.path().join("state"),
    );
    config.max_plugins = 2;
    let engine = plugbox::engine::Engine::new(config).unwrap();
    let p = TestPlugin::new(
        "counted",
        "[capabilities]\n\"log\" = {}\n",
        "import plugbox\n@plugbox.command\ndef work():\n    plugbox.host.call('log', level='info', message='x')\n    try:\n        plugbox.host.call('kv.get', key='k', timeout=None)\n    except plugbox.PlugboxError:\n        pass\n    return 1\n",
    );
    let a = engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("first");
    let b = engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("second");
    assert_eq!(engine.live_plugins(), 2);
    let third = engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await;
    assert!(
        matches!(third, Err(LoadError::Capacity(2))),
        "{:?}",
        third.err()
    );
    for _ in 0..3 {
        a.call("work", json!({})).await.expect("work");
    }
    let stats = a.stats();
    assert_eq!((stats.invokes, stats.invoke_errors), (3, 0));
    assert_eq!(
        (stats.calls, stats.denied),
        (6, 3),
        "every call reached the gate: 3 log calls allowed, 3 ungranted kv.get attempts denied"
    );
    assert!(stats.call_p50_us.is_some() && stats.invoke_p99_us.is_some());
    b.shutdown().await;
    assert_eq!(engine.live_plugins(), 1);
    let again = engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("room again");
    again.shutdown().await;
    a.shutdown().await;
    assert_eq!(engine.live_plugins(), 0);
}
