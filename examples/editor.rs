//! The seed scenario: a small document editor whose plugins read and rewrite the open
//! document through two host capabilities, `doc.get_text` and `doc.set_text`.
//!
//! Run: `cargo run --example editor` (as root, so plugins run as uid 65534).

use plugbox::capability::{typed, CallContext, CallError, Reply};
use plugbox::engine::{Engine, EngineConfig};
use plugbox::manifest::{CapabilityGrant, Grants};
use serde::Deserialize;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// `doc.get_text` takes no arguments.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// `doc.set_text {text}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetText {
    text: String,
}

/// Largest document a plugin may write.
const MAX_DOC_BYTES: usize = 1 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = std::env::temp_dir().join(format!("plugbox-editor-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let engine = Engine::new(EngineConfig::new(
        work.join("audit.jsonl"),
        work.join("state"),
    ))?;

    let document = Arc::new(Mutex::new(String::from(
        "the quick brown fox\njumps over the lazy dog",
    )));
    let doc = Arc::clone(&document);
    engine.register(
        "doc.get_text",
        typed(move |_ctx: CallContext, _: NoArgs| {
            let text = doc.lock().map(|d| d.clone()).unwrap_or_default();
            async move { Ok::<_, CallError>(text) }
        }),
    )?;
    let doc = Arc::clone(&document);
    engine.register(
        "doc.set_text",
        typed(move |ctx: CallContext, args: SetText| {
            let result = if args.text.len() > MAX_DOC_BYTES {
                Err(CallError::too_large(format!(
                    "documents are at most {MAX_DOC_BYTES} bytes"
                )))
            } else {
                if let Ok(mut d) = doc.lock() {
                    *d = args.text;
                }
                println!("  (document rewritten by {})", ctx.plugin.instance);
                Ok(serde_json::Value::Null)
            };
            async move { result }
        }),
    )?;

    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plugins");
    let grants = Grants::all_requested();
    let word_count = engine.load(&plugins.join("word-count"), &grants).await?;
    let title_case = engine.load(&plugins.join("title-case"), &grants).await?;

    println!(
        "document:\n{}\n",
        document.lock().map(|d| d.clone()).unwrap_or_default()
    );
    println!(
        "word-count.count -> {}",
        show(word_count.call("count", serde_json::json!({})).await)
    );
    println!(
        "title-case.apply -> {}",
        show(title_case.call("apply", serde_json::json!({})).await)
    );
    println!(
        "\ndocument:\n{}\n",
        document.lock().map(|d| d.clone()).unwrap_or_default()
    );

    // An operator who grants word-count nothing but `log` gets a clear refusal at load time
    // (unloaded first: loading a loaded plugin with other grants is a conflict).
    engine.unload("word-count").await;
    let stingy = Grants::none().grant("log", CapabilityGrant::default());
    match engine.load(&plugins.join("word-count"), &stingy).await {
        Ok(_) => println!("unexpected: loaded without doc.get_text"),
        Err(e) => println!("with only `log` granted: {e}"),
    }

    println!("title-case: {:?}", title_case.stats());
    drop(word_count);
    engine.shutdown().await?;
    let records = std::fs::read_to_string(engine.audit().path())?
        .lines()
        .count();
    println!(
        "\n{records} audit records in {}",
        engine.audit().path().display()
    );
    Ok(())
}

fn show(result: Result<Reply, CallError>) -> String {
    match result {
        Ok(Reply::Json(v)) => v.to_string(),
        Ok(Reply::Bytes(b)) => format!("{} bytes", b.len()),
        Err(e) => format!("error {e}"),
    }
}
