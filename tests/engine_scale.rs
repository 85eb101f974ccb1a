//! 256 plugins under one engine on this 2-core machine: all load, all answer a ping, and the
//! host's memory per live plugin is reported (target: at most 200 KiB of host RSS each, not
//! counting the plugin processes).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use futures_util::future::join_all;
use plugbox::capability::Reply;
use plugbox::manifest::Grants;
use serde_json::json;
use std::time::Instant;

const PLUGINS: usize = 256;
/// Host RSS allowed per live plugin.
const RSS_PER_PLUGIN_LIMIT_KIB: u64 = 200;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_six_plugins_all_answer_a_ping() {
    let te = TestEngine::new();
    let dirs: Vec<TestPlugin> = (0..PLUGINS)
        .map(|i| {
            TestPlugin::new(
                &format!("fleet-{i:03}"),
                "[limits]\nwall_seconds = 600\n",
                "import plugbox\n@plugbox.command\ndef hello():\n    return 'hi'\n",
            )
        })
        .collect();
    // Warm the allocator and the runtime with one plugin first, so the baseline is fair.
    let warm = TestPlugin::new("fleet-warmup", "", "import plugbox\n");
    te.engine
        .load(warm.path(), &Grants::all_requested())
        .await
        .expect("warm-up");
    te.engine.unload("fleet-warmup").await;
    let before = rss_kib();
    let started = Instant::now();
    let grants = Grants::all_requested();
    let loads = dirs.iter().map(|d| te.engine.load(d.path(), &grants));
    let plugins: Vec<_> = join_all(loads)
        .await
        .into_iter()
        .map(|r| r.expect("load"))
        .collect();
    let loaded_in = started.elapsed();
    assert_eq!(te.engine.live_plugins(), PLUGINS);
    let pings = plugins.iter().map(|p| p.call("plugbox.ping", json!({})));
    let started = Instant::now();
    for reply in join_all(pings).await {
        assert_eq!(reply.expect("ping"), Reply::Json(json!("pong")));
    }
    let pinged_in = started.elapsed();
    let after = rss_kib();
    let per_plugin = after.saturating_sub(before) / PLUGINS as u64;
    println!(
        "{PLUGINS} plugins: loaded in {loaded_in:?}, all pinged in {pinged_in:?}; host RSS {before} KiB -> {after} KiB = {per_plugin} KiB per live plugin"
    );
    assert!(
        per_plugin <= RSS_PER_PLUGIN_LIMIT_KIB,
        "host RSS per plugin {per_plugin} KiB > {RSS_PER_PLUGIN_LIMIT_KIB} KiB"
    );
    let started = Instant::now();
    te.engine.shutdown().await.expect("shutdown");
    println!("shut down in {:?}", started.elapsed());
    assert_eq!(te.engine.live_plugins(), 0);
}
