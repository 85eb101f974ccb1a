//! Many plugins under one engine: every plugin directory in `examples/plugins` and the
//! packaged example, loaded at once, called concurrently, one of them killed from outside
//! and restarted by its supervisor, then everything shut down and the audit log sealed.
//!
//! Run: `cargo run --release --example fleet` (as root, so each plugin process gets a uid of
//! its own).

use futures_util::future::join_all;
use plugbox::capability::{typed, CallContext, CallError};
use plugbox::engine::{Engine, EngineConfig, Plugin};
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = std::env::temp_dir().join(format!("plugbox-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let audit_path = work.join("audit.jsonl");
    let engine = Engine::new(EngineConfig::new(&audit_path, work.join("state")))?;
    let document = std::sync::Arc::new(std::sync::Mutex::new(String::from("the quick brown fox")));
    let doc = std::sync::Arc::clone(&document);
    engine.register(
        "doc.get_text",
        typed(move |_: CallContext, _: Value| {
            let text = doc.lock().map(|d| d.clone()).unwrap_or_default();
            async move { Ok::<_, CallError>(text) }
        }),
    )?;
    let doc = std::sync::Arc::clone(&document);
    engine.register(
        "doc.set_text",
        typed(move |_: CallContext, args: Value| {
            if let (Some(text), Ok(mut d)) = (args["text"].as_str(), doc.lock()) {
                *d = text.to_owned();
            }
            async move { Ok::<_, CallError>(Value::Null) }
        }),
    )?;

    // Load every plugin concurrently; each activation is atomic and independent.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("examples/plugins"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("plugbox.toml").is_file())
        .collect();
    dirs.push(root.join("examples/packaged/plugbox-hello/plugbox_hello"));
    dirs.sort();
    let grants = Grants::all_requested();
    let started = Instant::now();
    let loaded = join_all(dirs.iter().map(|d| engine.load(d, &grants))).await;
    let plugins: Vec<Plugin> = loaded.into_iter().collect::<Result<_, _>>()?;
    println!(
        "loaded {} plugins in {:.1} ms",
        plugins.len(),
        ms(started.elapsed())
    );

    // 50 rounds of one call to each plugin, all in flight together.
    let calls: Vec<(&str, Value)> = vec![
        ("notes", json!({"command": "greeting"})),
        ("title-case", json!({"command": "apply"})),
        ("word-count", json!({"command": "count"})),
        (
            "hello",
            json!({"command": "greet", "args": {"name": "fleet"}}),
        ),
    ];
    let started = Instant::now();
    let mut work_items = Vec::new();
    for _ in 0..50 {
        for (name, spec) in &calls {
            let Some(plugin) = engine.plugin(name) else {
                continue;
            };
            let command = spec["command"].as_str().unwrap_or_default().to_owned();
            let args = spec.get("args").cloned().unwrap_or_else(|| json!({}));
            work_items.push(async move {
                match plugin.call(&command, args).await {
                    Ok(_) => true,
                    Err(e) => {
                        println!("  {}.{command}: {e}", plugin.name());
                        false
                    }
                }
            });
        }
    }
    let total = work_items.len();
    let ok = join_all(work_items)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    println!(
        "{ok}/{total} concurrent calls succeeded in {:.1} ms",
        ms(started.elapsed())
    );

    // Kill one plugin's process from outside: its supervisor notices and starts a new one.
    if let Some(victim) = engine.plugin("word-count") {
        let pid = victim.instances()[0].pid();
        println!("SIGKILL to word-count (pid {pid}) from outside the engine ...");
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while victim.stats().restarts == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reply = victim.call("count", json!({})).await;
        println!(
            "word-count restarted (restarts = {}, new pid {}), count -> {}",
            victim.stats().restarts,
            victim.instances().first().map(|i| i.pid()).unwrap_or(0),
            reply
                .map(|r| format!("{r:?}"))
                .unwrap_or_else(|e| e.to_string())
        );
    }

    println!(
        "\n{:<12} {:<8} {:<9} {:>5} {:>6} {:>8} {:>8}",
        "plugin", "version", "state", "ready", "calls", "p50 us", "restarts"
    );
    for s in engine.plugins() {
        println!(
            "{:<12} {:<8} {:<9} {:>5} {:>6} {:>8} {:>8}",
            s.name,
            s.version,
            s.state.as_str(),
            s.ready_instances,
            s.calls.invokes,
            s.calls
                .invoke_p50_us
                .map(|v| v.to_string())
                .unwrap_or_default(),
            s.restarts
        );
    }

    engine.shutdown().await?;
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&audit_path)?.lines() {
        let record: Value = serde_json::from_str(line)?;
        *events
            .entry(record["event"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    println!("\naudit log {} (sealed):", audit_path.display());
    for (event, n) in events {
        println!("  {event:<16} {n}");
    }
    println!(
        "verify it with: plugbox audit verify {}",
        audit_path.display()
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
