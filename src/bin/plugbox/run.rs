//! `plugbox run PLUGIN_DIR [--grant FILE] [--audit FILE] [--state DIR] [--call CMD [--args JSON]]...`

use plugbox::capability::Reply;
use plugbox::engine::{Engine, EngineConfig};
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// One `--call` with its `--args`.
pub struct CallSpec {
    pub command: String,
    pub args: Value,
}

/// Options of `plugbox run`.
pub struct RunOptions {
    pub dir: PathBuf,
    pub grant: Option<PathBuf>,
    pub audit: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub calls: Vec<CallSpec>,
    pub durability: plugbox::audit::Durability,
    pub stats: bool,
}

pub fn run(opts: RunOptions) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async_run(opts))
}

async fn async_run(opts: RunOptions) -> Result<ExitCode, String> {
    let grants = match &opts.grant {
        Some(path) => Grants::load(path).map_err(|e| e.to_string())?,
        None => {
            eprintln!(
                "plugbox: warning: no --grant: the plugin gets everything its manifest asks for \
                 (development only; give a grant file in production)"
            );
            Grants::all_requested()
        }
    };
    let (audit, state) = crate::paths::resolve(opts.audit.clone(), opts.state.clone())?;
    let mut config = EngineConfig::new(&audit, &state);
    config.audit.durability = opts.durability;
    let engine = Engine::new(config).map_err(|e| e.to_string())?;
    let plugin = engine
        .load(&opts.dir, &grants)
        .await
        .map_err(|e| e.to_string())?;
    let mut all_ok = true;
    for call in &opts.calls {
        let line = match plugin.call(&call.command, call.args.clone()).await {
            Ok(reply) => {
                json!({ "command": call.command, "ok": true, "result": reply_json(reply) })
            }
            Err(e) => {
                all_ok = false;
                let mut error = json!({ "code": e.code.as_str(), "message": e.message });
                if let Some(tb) = e.traceback {
                    error["traceback"] = Value::String(tb);
                }
                json!({ "command": call.command, "ok": false, "error": error })
            }
        };
        println!("{}", plugbox::display::json(&line));
        if engine.audit().is_failed() {
            break;
        }
    }
    if opts.stats {
        println!(
            "{}",
            plugbox::display::json(&json!({ "stats": plugin.stats() }))
        );
    }
    // Unloads the plugin (drain, shutdown, SIGTERM, SIGKILL) and seals the log; a failed log
    // makes the whole run an engine failure.
    engine.shutdown().await.map_err(|e| e.to_string())?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn reply_json(reply: Reply) -> Value {
    match reply {
        Reply::Json(v) => v,
        Reply::Bytes(b) => match String::from_utf8(b) {
            Ok(text) => json!({ "bytes_utf8": text }),
            Err(e) => json!({ "bytes_len": e.as_bytes().len() }),
        },
    }
}
