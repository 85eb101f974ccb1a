//! `plugbox serve`: the managed engine for hosts in any language. Requests are JSON lines on
//! stdin, answers JSON lines on stdout, each carrying its request's `id`. Requests run
//! concurrently, so answers may come out of order; but per plugin, order is kept where it
//! matters: a request naming a plugin waits for an earlier `load`, `reload` or `unload` of it,
//! and those wait for every earlier request naming it. A host may pipeline a load, calls and
//! an unload. End of input (or `shutdown`) unloads every plugin, seals the audit
//! log and exits 0. So does SIGTERM or SIGINT, without waiting for the requests still
//! running: they end with their plugins (calls in flight get the shutdown grace).
//!
//! ```text
//! {"id": 1, "op": "load", "dir": "plugins/word-count", "grant": "grants/word-count.toml"}
//! {"id": 2, "op": "call", "plugin": "word-count", "command": "count", "args": {}}
//! {"id": 3, "op": "reload", "plugin": "word-count", "dir": "plugins/word-count-2"}
//! {"id": 4, "op": "stats"}
//! {"id": 5, "op": "unload", "plugin": "word-count"}
//! {"id": 6, "op": "shutdown"}
//! ```
//!
//! A `load` or `reload` names its grant file (`"grant"`): the ceiling of what the plugin gets.
//! Without one it is refused (`invalid`), unless serve was started with `--allow-ungranted`
//! (development: the plugin then gets everything its manifest asks). With `--clamp`, requests
//! beyond the grant are dropped and audited instead of refusing the load.
//!
//! With `--capability NAME`, plugins may call host capability NAME: see `forwarded.rs` for the
//! `host_call` lines this writes and the `host_reply` lines the host answers with.
//!
//! With `--metrics 127.0.0.1:PORT`, `GET /metrics` answers the engine's metrics in the
//! Prometheus text format (loopback only; see `serve_metrics.rs` and `docs/metrics.md`).
//!
//! Every answer is `{"id": ..., "ok": true, "result": ...}` or `{"id": ..., "ok": false,
//! "error": {"code": ..., "message": ...}}`; a line that is not a valid request is answered
//! with `"id": null` when its id cannot be read.

use crate::forwarded::{Forwarded, HostCalls, Running};
use crate::serve_input::{Input, Reading};
use crate::serve_io::{Line, Output};
use crate::serve_order::{Order, Subject, Ticket};
use plugbox::capability::Reply;
use plugbox::engine::{CallOptions, Engine, EngineConfig, Plugin};
use plugbox::manifest::Grants;
use plugbox::serve::{answer, body_answer, Failure, Ready, Request, BODY_PROTOCOL};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Longest request line accepted; a longer one is answered with an error and skipped.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Options of `plugbox serve`.
pub struct ServeOptions {
    pub audit: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub durability: plugbox::audit::Durability,
    /// Host capabilities answered by the host over the pipes.
    pub capabilities: Vec<String>,
    /// May a `load` or `reload` without `grant` give the plugin everything its manifest asks
    /// (`--allow-ungranted`, for development)? Otherwise such a request is refused.
    pub allow_ungranted: bool,
    /// Drop a manifest's requests beyond its grant (audited) instead of refusing the load.
    pub clamp: bool,
    /// Serve `GET /metrics` on this loopback `IP:PORT` (`--metrics`).
    pub metrics: Option<String>,
    /// The protocol version the host speaks (`--protocol`).
    pub protocol: u32,
    /// Write `event` lines (`--events`).
    pub events: bool,
    /// Checkpoint signing (`--audit-key` and friends).
    pub signing: crate::audit_keys::SigningArgs,
}

pub fn serve(opts: ServeOptions) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    // The request loop runs on a worker, not on this thread: a request read from stdin then
    // wakes one thread (a worker), whose task for the request runs right after on the same
    // worker, instead of waking this thread first and a worker second.
    runtime.block_on(async {
        tokio::spawn(async_serve(opts))
            .await
            .map_err(|e| format!("serve: {e}"))?
    })
}

async fn async_serve(opts: ServeOptions) -> Result<ExitCode, String> {
    if !plugbox::serve::PROTOCOLS.contains(&opts.protocol) {
        return Err(format!(
            "cli: --protocol {}: this engine speaks protocol {:?}",
            opts.protocol,
            plugbox::serve::PROTOCOLS
        ));
    }
    let (audit, state) = crate::paths::resolve(opts.audit.clone(), opts.state.clone())?;
    let mut config = EngineConfig::new(&audit, &state);
    config.audit.durability = opts.durability;
    opts.signing.apply(&mut config);
    if opts.clamp {
        config.ceiling = plugbox::manifest::CeilingMode::Clamp;
    }
    let engine = Engine::new(config).map_err(|e| e.to_string())?;
    if let Some(addr) = &opts.metrics {
        let listener = crate::serve_metrics::bind(addr).await?;
        tokio::spawn(crate::serve_metrics::serve(listener, engine.clone()));
    }
    let host_calls = Arc::new(HostCalls::default());
    let (out, writer) = crate::serve_io::spawn_writer(Arc::clone(&host_calls))
        .map_err(|e| format!("serve: stdout thread: {e}"))?;
    for name in opts.capabilities {
        let forwarded = Forwarded {
            name: name.clone(),
            calls: Arc::clone(&host_calls),
            out: out.clone(),
        };
        engine
            .register(&name, Arc::new(forwarded))
            .map_err(|e| e.to_string())?;
    }
    let ready = serde_json::to_value(Ready::new(opts.protocol)).unwrap_or_default();
    send(&out, ready).await;
    let events = opts
        .events
        .then(|| crate::serve_events::forward(&engine, out.clone()));
    let limits = engine.clone();
    let mut input = crate::serve_input::spawn_reader(Reading {
        max_line: MAX_REQUEST_BYTES,
        protocol: opts.protocol,
        limit: Box::new(move |name| limits.plugin(name).map(|p| p.max_body_bytes())),
        host_calls: Arc::clone(&host_calls),
    })
    .map_err(|e| format!("serve: stdin thread: {e}"))?;
    let mut running = tokio::task::JoinSet::new();
    let order = Arc::new(Order::default());
    let mut failed = None;
    let stop = crate::signals::Termination::install()?;
    let mut signalled = None;
    loop {
        let item = tokio::select! {
            item = input.recv() => item,
            sig = stop.recv() => {
                signalled = Some(sig);
                None
            }
        };
        let Some(item) = item else { break };
        let (id, request, body) = match item {
            Input::Request { id, request, body } => (id, request, body),
            Input::Refused { id, failure } => {
                send(&out, answer(id, Err(failure))).await;
                continue;
            }
            Input::Failed(e) => {
                failed = Some(format!("stdin: {e}"));
                break;
            }
        };
        if matches!(request, Request::Shutdown {}) {
            // Let the requests already running answer first.
            while running.join_next().await.is_some() {}
            send(&out, answer(id, Ok(Value::Null))).await;
            break;
        }
        if let Some(refusal) = ungranted(&request, opts.allow_ungranted) {
            send(&out, answer(id, Err(refusal))).await;
            continue;
        }
        let ticket = order.file(subject(&request, &engine));
        let tag = matches!(request, Request::Call { .. }).then(|| host_calls.running(&id));
        let serving = Serving {
            engine: engine.clone(),
            out: out.clone(),
            protocol: opts.protocol,
        };
        running.spawn(run_request(serving, ticket, (id, tag), (request, body)));
    }
    let finish_running = async { while running.join_next().await.is_some() {} };
    let sealed = match signalled {
        // End of input: answer everything asked, then stop.
        None => {
            finish_running.await;
            engine.shutdown().await
        }
        // SIGTERM or SIGINT: stop now; requests still running end with their plugins.
        Some(sig) => {
            tracing::info!(
                signal = crate::signals::name(sig),
                "stopping: unloading every plugin and sealing the audit log"
            );
            tokio::join!(engine.shutdown(), finish_running).0
        }
    };
    let sealed = sealed.map_err(|e| e.to_string());
    // Every record of the shutdown is written: its events are queued; write them, then end.
    if let Some(events) = events {
        events.finish().await;
    }
    let _ = out.send(Line::End).await;
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    match failed {
        Some(e) => Err(e),
        None => sealed.map(|()| ExitCode::SUCCESS),
    }
}

/// Queues one answer line, waiting for room.
async fn send(out: &Output, line: Value) {
    let _ = out.send(Line::Answer(line)).await;
}

/// What a request's task needs.
struct Serving {
    engine: Engine,
    out: Output,
    /// The protocol the host speaks.
    protocol: u32,
}

impl Serving {
    /// Runs `request` and answers it.
    async fn answer(&self, id: Value, request: Request, body: Option<Vec<u8>>, tag: Option<u64>) {
        let result = handle(&self.engine, request, (body, tag)).await;
        let line = match result {
            Ok(Reply::Json(v)) => Line::Answer(answer(id, Ok(v))),
            Ok(Reply::Bytes(bytes)) if self.protocol >= BODY_PROTOCOL => Line::Body {
                line: body_answer(id, bytes.len() as u64),
                bytes,
            },
            // Protocol 1 has no binary results.
            Ok(bytes) => Line::Answer(answer(id, Ok(bytes.into_json()))),
            Err(f) => Line::Answer(answer(id, Err(f))),
        };
        let _ = self.out.send(line).await;
    }
}

/// One request in its own task: a load's manifest is read here (off the request loop, on a
/// blocking thread; the reader refuses special files and is capped, so it cannot hang), then
/// the request waits its turn, runs and is answered.
async fn run_request(
    serving: Serving,
    mut ticket: Ticket,
    (id, running): (Value, Option<Running>),
    (request, body): (Request, Option<Vec<u8>>),
) {
    let tag = running.as_ref().map(|r| r.tag);
    if let Request::Load { dir, .. } = &request {
        let dir = dir.clone();
        let read = tokio::task::spawn_blocking(move || plugbox::manifest::Manifest::load(&dir))
            .await
            .map_err(|e| e.to_string())
            .and_then(|m| m.map_err(|e| e.to_string()));
        match read {
            Ok(manifest) => ticket.named(Some(manifest.name)),
            Err(_) => {
                // Unreadable: nothing to order it against. The engine reads it again (the
                // reader never blocks and is capped) so that the refusal is audited.
                ticket.named(None);
                drop(ticket);
                return serving.answer(id, request, body, tag).await;
            }
        }
    }
    ticket.wait().await;
    serving.answer(id, request, body, tag).await;
    drop((ticket, running));
}

/// The plugin a request is about, for its place in the order (a load's name is read later, in
/// its own task).
fn subject(request: &Request, engine: &Engine) -> Subject {
    let plugin = |name: &String, lifecycle: bool| Subject::Plugin {
        name: name.clone(),
        lifecycle,
        loaded: engine.plugin(name).is_some(),
    };
    match request {
        Request::Load { .. } => Subject::Load,
        Request::Reload { plugin: name, .. } | Request::Unload { plugin: name } => {
            plugin(name, true)
        }
        Request::Call { plugin: name, .. } | Request::Describe { plugin: name } => {
            plugin(name, false)
        }
        Request::Stats {} | Request::Shutdown {} | Request::HostReply { .. } => Subject::Nothing,
    }
}

/// Runs one request; a `call` carries its raw body, if any, and `tag` (its `host_call` lines
/// name the request).
async fn handle(
    engine: &Engine,
    request: Request,
    (body, tag): (Option<Vec<u8>>, Option<u64>),
) -> Result<Reply, Failure> {
    match request {
        Request::Load { dir, grant } => {
            let grants = grants(grant.as_deref())?;
            let plugin = engine
                .load(&dir, &grants)
                .await
                .map_err(|e| Failure::new("load_failed", format!("{} at {}", e, e.step())))?;
            Ok(Reply::Json(describe(&plugin)))
        }
        Request::Reload { plugin, dir, grant } => {
            let grants = grants(grant.as_deref())?;
            let plugin = engine
                .reload(&plugin, &dir, &grants)
                .await
                .map_err(|e| Failure::new("load_failed", format!("{} at {}", e, e.step())))?;
            Ok(Reply::Json(describe(&plugin)))
        }
        Request::Unload { plugin } => {
            if engine.unload(&plugin).await {
                Ok(Reply::Json(Value::Null))
            } else {
                Err(Failure::new(
                    "not_loaded",
                    format!("{plugin} is not loaded"),
                ))
            }
        }
        Request::Call {
            plugin,
            command,
            args,
            body: header,
        } => {
            let Some(p) = engine.plugin(&plugin) else {
                return Err(Failure::new(
                    "not_loaded",
                    format!("{plugin} is not loaded"),
                ));
            };
            let Value::Object(args) = args else {
                return Err(Failure::new("invalid", "arguments must be a JSON object"));
            };
            let body = match (header, body) {
                (Some(h), _) if args.contains_key(&h.arg) => {
                    let why = format!("body argument {:?} also appears in args", h.arg);
                    return Err(Failure::new("invalid", why));
                }
                (Some(h), Some(bytes)) => Some((h.arg, bytes)),
                _ => None,
            };
            let options = CallOptions { body, tag };
            Ok(p.call_with(&command, args, options).await?)
        }
        Request::Describe { plugin } => {
            let Some(p) = engine.plugin(&plugin) else {
                return Err(Failure::new(
                    "not_loaded",
                    format!("{plugin} is not loaded"),
                ));
            };
            let description = p.describe().await?;
            Ok(Reply::Json(
                serde_json::to_value(description).unwrap_or_default(),
            ))
        }
        Request::Stats {} => Ok(Reply::Json(
            serde_json::to_value(engine.plugins()).unwrap_or(Value::Null),
        )),
        Request::Shutdown {} | Request::HostReply { .. } => Ok(Reply::Json(Value::Null)),
    }
}

/// A `load` or `reload` without `grant`, when serve was not started with
/// `--allow-ungranted`: refused, never silently granted everything.
fn ungranted(request: &Request, allowed: bool) -> Option<Failure> {
    let missing = matches!(
        request,
        Request::Load { grant: None, .. } | Request::Reload { grant: None, .. }
    );
    (missing && !allowed).then(|| {
        Failure::new(
            "invalid",
            "no grant: name a grant file (\"grant\"), or start serve with --allow-ungranted \
             to give plugins everything their manifests ask (development only)",
        )
    })
}

/// The request's grant file; without one (allowed by `--allow-ungranted` only), everything
/// the manifest asks.
fn grants(file: Option<&Path>) -> Result<Grants, Failure> {
    match file {
        Some(path) => Grants::load(path).map_err(|e| Failure::new("invalid", e.to_string())),
        None => Ok(Grants::all_requested()),
    }
}

fn describe(plugin: &Plugin) -> Value {
    let stats = plugin.stats();
    json!({
        "name": stats.name,
        "version": stats.version,
        "digest": stats.digest,
        "state": stats.state,
        "ready_instances": stats.ready_instances,
    })
}
