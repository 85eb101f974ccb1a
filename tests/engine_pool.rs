//! Warm instances with real plugins: calls spread over the pool, each instance under its own
//! uid, one rate bucket per plugin, growth under load and shrinking back when idle.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::engine::*;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_share_the_calls_each_under_its_own_uid() {
    let te = TestEngine::new();
    let main = format!(
        "{ECHO}@plugbox.command\ndef napspan(s):\n    t0 = time.monotonic()\n    time.sleep(s)\n    return [os.getpid(), t0, time.monotonic()]\n"
    );
    let p = TestPlugin::new("pool", "[process]\ninstances = 3\nmin_warm = 2\n", &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    assert_eq!(
        plugin.instances().len(),
        2,
        "min_warm instances are ready at load"
    );
    // Each call reports its instance and when it napped, on the host-wide monotonic clock.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move {
                match plugin.call("napspan", json!({"s": 0.4})).await.unwrap() {
                    Reply::Json(v) => (
                        v[0].as_i64().unwrap(),
                        v[1].as_f64().unwrap(),
                        v[2].as_f64().unwrap(),
                    ),
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    let mut spans = Vec::new();
    for c in calls {
        spans.push(c.await.unwrap());
    }
    let mut pids: Vec<i64> = spans.iter().map(|s| s.0).collect();
    pids.sort_unstable();
    pids.dedup();
    assert!(pids.len() >= 2, "calls went to one instance: {spans:?}");
    // Calls on different instances ran at the same time, not one after the other.
    let overlapping = spans
        .iter()
        .any(|a| spans.iter().any(|b| a.0 != b.0 && a.1 < b.2 && b.1 < a.2));
    assert!(
        overlapping,
        "calls on different instances did not overlap: {spans:?}"
    );
    // The busy pool grew to `instances`.
    for _ in 0..200 {
        if plugin.instances().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(plugin.instances().len(), 3);
    let uids: Vec<u64> = te
        .events("spawn")
        .iter()
        .map(|r| r["detail"]["enforcement"]["uid"].as_u64().unwrap())
        .collect();
    let mut distinct = uids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{uids:?}");
    for instance in plugin.instances() {
        let status = std::fs::read_to_string(format!("/proc/{}/status", instance.pid())).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let uid: u64 = uid_line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(uids.contains(&uid) && uid >= u64::from(plugbox::engine::DEFAULT_UID_BASE));
    }
    te.engine.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_for_the_plugin_across_its_instances() {
    let te = TestEngine::new();
    let main = "import plugbox, os\n@plugbox.command\ndef burst(n):\n    ok = 0\n    for _ in range(n):\n        try:\n            plugbox.host.call('kv.get', key='k')\n            ok += 1\n        except plugbox.PlugboxError:\n            pass\n    return [os.getpid(), ok]\n";
    let p = TestPlugin::new(
        "metered",
        "[capabilities]\n\"kv.get\" = {}\n[process]\ninstances = 2\nmin_warm = 2\n[limits]\ncalls_per_second = 1\ncall_burst = 10\n",
        main,
    );
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    // Two calls at once go to the two instances; together they get one bucket of 10.
    let (a, b) = tokio::join!(
        plugin.call("burst", json!({"n": 10})),
        plugin.call("burst", json!({"n": 10}))
    );
    let (a, b) = match (a.unwrap(), b.unwrap()) {
        (Reply::Json(a), Reply::Json(b)) => (a, b),
        other => panic!("{other:?}"),
    };
    assert_ne!(a[0], b[0], "both instances served");
    let allowed = a[1].as_u64().unwrap() + b[1].as_u64().unwrap();
    assert!(
        (10..=11).contains(&allowed),
        "{allowed} calls passed a burst of 10"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_under_load_and_shrinks_back_to_min_warm_when_idle() {
    let te = TestEngine::new();
    let p = TestPlugin::new(
        "elastic",
        "[process]\ninstances = 2\nmin_warm = 1\nidle_seconds = 1\n[supervision]\nhealth_interval_ms = 200\n",
        ECHO,
    );
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    assert_eq!(plugin.instances().len(), 1);
    let naps: Vec<_> = (0..4)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move { plugin.call("nap", json!({"s": 0.3})).await })
        })
        .collect();
    for _ in 0..300 {
        if plugin.instances().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(plugin.instances().len(), 2, "the pool grew under load");
    for nap in naps {
        nap.await.unwrap().expect("nap");
    }
    let pids: Vec<i32> = plugin.instances().iter().map(|i| i.pid()).collect();
    let retired = te
        .wait_for("scale down", |r| {
            r["event"] == "state" && r["reason"].as_str().is_some_and(|s| s.contains("idle"))
        })
        .await;
    assert_eq!(retired["detail"]["to"], "draining");
    for _ in 0..300 {
        if plugin.instances().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(plugin.instances().len(), 1, "back to min_warm");
    let gone: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|pid| !plugin.instances().iter().any(|i| i.pid() == *pid))
        .collect();
    assert_eq!(gone.len(), 1);
    assert!(gone_within(gone[0], Duration::from_secs(3)).await);
    assert_eq!(plugin.stats().restarts, 0, "retiring is not a failure");
    assert_eq!(
        plugin.call("echo", json!({"x": 3})).await.unwrap(),
        Reply::Json(json!(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_bomb_in_one_plugin_leaves_another_its_own_thread_budget() {
    let te = TestEngine::new();
    let code = "import plugbox, _thread\n_hold = _thread.allocate_lock()\n_hold.acquire()\n@plugbox.command\ndef bomb():\n    n = 0\n    try:\n        while n < 1000:\n            _thread.start_new_thread(_hold.acquire, ())\n            n += 1\n    except RuntimeError:\n        pass\n    return n\n@plugbox.command\ndef few(k):\n    for _ in range(k):\n        _thread.start_new_thread(_hold.acquire, ())\n    return k\n";
    let policy = "[process]\nmax_threads = 8\n";
    let a = TestPlugin::new("bomber", policy, code);
    let b = TestPlugin::new("bystander", policy, code);
    let a = te.engine.load(a.path(), &all()).await.expect("a");
    let b = te.engine.load(b.path(), &all()).await.expect("b");
    let started = match a.call("bomb", json!({})).await.expect("bomb") {
        Reply::Json(v) => v.as_u64().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(
        (1..8).contains(&started),
        "RLIMIT_NPROC stopped the bomb at {started} threads"
    );
    // Same policy, same default identity, but a uid of its own: its budget is untouched.
    assert_eq!(
        b.call("few", json!({"k": 4})).await.expect("few"),
        Reply::Json(json!(4))
    );
}
