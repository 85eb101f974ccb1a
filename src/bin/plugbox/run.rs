//! `plugbox run PLUGIN_DIR [--grant FILE [--clamp]] [--audit FILE] [--state DIR] [--stub CAP=JSON]... [--call CMD [--args JSON]]...`
//!
//! Whatever ends it (the last call, a failed load, SIGTERM or SIGINT: exit status 128+N), the
//! plugin is unloaded and the audit log sealed before it exits.

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
    pub clamp: bool,
    pub audit: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub calls: Vec<CallSpec>,
    /// `--stub CAP=JSON`: host capabilities answered without a host (`stub.rs`).
    pub stubs: Vec<crate::stub::StubSpec>,
    pub durability: plugbox::audit::Durability,
    pub stats: bool,
    pub signing: crate::audit_keys::SigningArgs,
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
    opts.signing.apply(&mut config);
    if opts.clamp {
        config.ceiling = plugbox::manifest::CeilingMode::Clamp;
    }
    let engine = Engine::new(config).map_err(|e| e.to_string())?;
    let stop = crate::signals::Termination::install()?;
    let stubs = crate::stub::install(&engine, &opts.dir, &opts.stubs);
    let outcome = match &stubs {
        Ok(_) => tokio::select! {
            outcome = load_and_call(&engine, &opts, &grants) => outcome,
            sig = stop.recv() => Ok(Stopped::BySignal(sig)),
        },
        Err(e) => Err(e.clone()),
    };
    // Every way out passes here, a failed load included: unload the plugin (drain, shutdown,
    // SIGTERM, SIGKILL) and seal the log before the process exits. (Returning early left
    // the seal to whichever thread dropped the log last, which could be cut off by the exit.)
    // A failed log makes the whole run an engine failure.
    let sealed = engine.shutdown().await.map_err(|e| e.to_string());
    if let Ok(slot) = stubs {
        slot.clear();
    }
    match (outcome, sealed) {
        (Ok(Stopped::Done { all_ok: true }), Ok(())) => Ok(ExitCode::SUCCESS),
        (Ok(Stopped::Done { all_ok: false }), Ok(())) => Ok(ExitCode::from(1)),
        (Ok(Stopped::BySignal(sig)), Ok(())) => {
            eprintln!(
                "plugbox: stopped by {}: the plugin was unloaded and the audit log sealed",
                crate::signals::name(sig)
            );
            Ok(ExitCode::from(
                128u8.saturating_add(u8::try_from(sig).unwrap_or(0)),
            ))
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(_), Err(s)) => Err(s),
        (Err(e), Err(s)) => Err(format!("{e}\n{s}")),
    }
}

/// How the load-and-call part of a run ended.
enum Stopped {
    /// Every call was made; `all_ok` if every one succeeded.
    Done { all_ok: bool },
    /// SIGTERM or SIGINT came first.
    BySignal(libc::c_int),
}

async fn load_and_call(
    engine: &Engine,
    opts: &RunOptions,
    grants: &Grants,
) -> Result<Stopped, String> {
    let plugin = engine
        .load(&opts.dir, grants)
        .await
        .map_err(|e| e.to_string())?;
    let mut all_ok = true;
    for call in &opts.calls {
        let line = match plugin.call(&call.command, call.args.clone()).await {
            Ok(reply) => {
                json!({ "command": call.command, "ok": true, "result": reply.into_json() })
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
    Ok(Stopped::Done { all_ok })
}
