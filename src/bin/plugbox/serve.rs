//! `plugbox serve`: the managed engine for hosts in any language. Requests are JSON lines on
//! stdin, answers JSON lines on stdout, each carrying its request's `id`. Requests run
//! concurrently, so answers may come out of order; but per plugin, order is kept where it
//! matters: a request naming a plugin waits for an earlier `load`, `reload` or `unload` of it,
//! and those wait for every earlier request naming it. A host may pipeline a load, calls and
//! an unload. End of input (or `shutdown`) unloads every plugin, seals the audit
//! log and exits 0.
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
//! With `--capability NAME`, plugins may call host capability NAME: see `forwarded.rs` for the
//! `host_call` lines this writes and the `host_reply` lines the host answers with.
//!
//! Every answer is `{"id": ..., "ok": true, "result": ...}` or `{"id": ..., "ok": false,
//! "error": {"code": ..., "message": ...}}`; a line that is not a valid request is answered
//! with `"id": null` when its id cannot be read.

use crate::forwarded::{Forwarded, HostCalls};
use plugbox::capability::{CallError, Reply};
use plugbox::engine::{Engine, EngineConfig, Plugin};
use plugbox::manifest::Grants;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

/// Requests still running, by plugin name.
type Pending = Arc<Mutex<HashMap<String, Track>>>;

/// What a new request for one plugin must wait for.
#[derive(Default)]
struct Track {
    /// The latest `load`, `reload` or `unload`.
    lifecycle: Option<watch::Receiver<bool>>,
    /// Requests since then.
    others: Vec<watch::Receiver<bool>>,
}

/// Longest request line accepted; a longer one is answered with an error and skipped.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Options of `plugbox serve`.
pub struct ServeOptions {
    pub audit: PathBuf,
    pub state: PathBuf,
    pub durability: plugbox::audit::Durability,
    /// Host capabilities answered by the host over the pipes.
    pub capabilities: Vec<String>,
}

/// One request.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Load {
        dir: PathBuf,
        #[serde(default)]
        grant: Option<PathBuf>,
    },
    Reload {
        plugin: String,
        dir: PathBuf,
        #[serde(default)]
        grant: Option<PathBuf>,
    },
    Unload {
        plugin: String,
    },
    Call {
        plugin: String,
        command: String,
        #[serde(default = "empty_object")]
        args: Value,
    },
    Stats {},
    Shutdown {},
    /// Not a request: the host's answer to a `host_call`.
    HostReply {
        call: u64,
        #[serde(default)]
        result: Option<Value>,
        #[serde(default)]
        error: Option<Value>,
    },
}

fn empty_object() -> Value {
    json!({})
}

/// A failed request: a stable code and a message.
struct Failure {
    code: &'static str,
    message: String,
    traceback: Option<String>,
}

impl Failure {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            traceback: None,
        }
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Self {
            code: e.code.as_str(),
            message: e.message,
            traceback: e.traceback,
        }
    }
}

pub fn serve(opts: ServeOptions) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async_serve(opts))
}

async fn async_serve(opts: ServeOptions) -> Result<ExitCode, String> {
    let mut config = EngineConfig::new(&opts.audit, &opts.state);
    config.audit.durability = opts.durability;
    let engine = Engine::new(config).map_err(|e| e.to_string())?;
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    let host_calls = Arc::new(HostCalls::default());
    for name in opts.capabilities {
        let forwarded = Forwarded {
            name: name.clone(),
            calls: Arc::clone(&host_calls),
            out: out_tx.clone(),
        };
        engine
            .register(&name, Arc::new(forwarded))
            .map_err(|e| e.to_string())?;
    }
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        // `null` is never an answer: it marks the end (forwarded capabilities kept in plugins
        // that are still being dropped may hold senders a while longer).
        while let Some(line) = out_rx.recv().await.filter(|l| !l.is_null()) {
            let mut bytes = line.to_string().into_bytes();
            bytes.push(b'\n');
            if stdout.write_all(&bytes).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    let mut input = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut running = tokio::task::JoinSet::new();
    let pending: Pending = Arc::default();
    loop {
        line.clear();
        let read = (&mut input)
            .take(MAX_REQUEST_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("stdin: {e}"))?;
        if read == 0 {
            break;
        }
        if line.len() > MAX_REQUEST_BYTES && line.last() != Some(&b'\n') {
            skip_rest_of_line(&mut input).await?;
            let why = format!("request longer than {MAX_REQUEST_BYTES} bytes");
            let _ = out_tx.send(answer(Value::Null, Err(Failure::new("too_large", why))));
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (id, request) = match parse(&line) {
            Ok(parsed) => parsed,
            Err((id, failure)) => {
                let _ = out_tx.send(answer(id, Err(failure)));
                continue;
            }
        };
        if let Request::HostReply {
            call,
            result,
            error,
        } = request
        {
            if !host_calls.answer(call, result, error) {
                let why = format!("no host call {call} is waiting (answered, or timed out)");
                let _ = out_tx.send(answer(id, Err(Failure::new("invalid", why))));
            }
            continue;
        }
        if matches!(request, Request::Shutdown {}) {
            // Let the requests already running answer first.
            while running.join_next().await.is_some() {}
            let _ = out_tx.send(answer(id, Ok(Value::Null)));
            break;
        }
        let engine = engine.clone();
        let out = out_tx.clone();
        let (done, earlier) = order(&pending, &request);
        running.spawn(async move {
            for mut rx in earlier {
                let _ = rx.wait_for(|finished| *finished).await;
            }
            let result = handle(&engine, request).await;
            let _ = done.send(true);
            let _ = out.send(answer(id, result));
        });
    }
    while running.join_next().await.is_some() {}
    let sealed = engine.shutdown().await.map_err(|e| e.to_string());
    let _ = out_tx.send(Value::Null);
    let _ = writer.await;
    sealed.map(|()| ExitCode::SUCCESS)
}

impl Request {
    /// The plugin a request is about, if it names one (a load: from its manifest, read
    /// without running anything).
    fn plugin_name(&self) -> Option<String> {
        match self {
            Request::Load { dir, .. } => {
                plugbox::manifest::Manifest::load(dir).ok().map(|m| m.name)
            }
            Request::Reload { plugin, .. }
            | Request::Unload { plugin }
            | Request::Call { plugin, .. } => Some(plugin.clone()),
            Request::Stats {} | Request::Shutdown {} | Request::HostReply { .. } => None,
        }
    }
}

/// Files `request` under its plugin: returns where to say it finished, and what it must wait
/// for first.
fn order(
    pending: &Pending,
    request: &Request,
) -> (watch::Sender<bool>, Vec<watch::Receiver<bool>>) {
    let (done, rx) = watch::channel(false);
    let Some(name) = request.plugin_name() else {
        return (done, Vec::new());
    };
    let mut map = pending.lock().unwrap_or_else(|p| p.into_inner());
    let track = map.entry(name).or_default();
    track.others.retain(|r| !*r.borrow());
    let lifecycle = matches!(
        request,
        Request::Load { .. } | Request::Reload { .. } | Request::Unload { .. }
    );
    let mut earlier: Vec<watch::Receiver<bool>> = track.lifecycle.iter().cloned().collect();
    if lifecycle {
        earlier.append(&mut track.others);
        track.lifecycle = Some(rx);
    } else {
        track.others.push(rx);
    }
    (done, earlier)
}

/// Reads and drops the rest of an overlong line.
async fn skip_rest_of_line(input: &mut BufReader<tokio::io::Stdin>) -> Result<(), String> {
    loop {
        let buf = input.fill_buf().await.map_err(|e| format!("stdin: {e}"))?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}

/// The request's id (any JSON scalar the caller chose) and the typed request.
fn parse(line: &[u8]) -> Result<(Value, Request), (Value, Failure)> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            Value::Null,
            Failure::new("invalid", format!("not JSON: {e}")),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err((
            Value::Null,
            Failure::new("invalid", "a request is a JSON object"),
        ));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    let request = serde_json::from_value(Value::Object(object)).map_err(|e| {
        (
            id.clone(),
            Failure::new("invalid", format!("bad request: {e}")),
        )
    })?;
    Ok((id, request))
}

async fn handle(engine: &Engine, request: Request) -> Result<Value, Failure> {
    match request {
        Request::Load { dir, grant } => {
            let grants = grants(grant.as_deref())?;
            let plugin = engine
                .load(&dir, &grants)
                .await
                .map_err(|e| Failure::new("load_failed", format!("{} at {}", e, e.step())))?;
            Ok(describe(&plugin))
        }
        Request::Reload { plugin, dir, grant } => {
            let grants = grants(grant.as_deref())?;
            let plugin = engine
                .reload(&plugin, &dir, &grants)
                .await
                .map_err(|e| Failure::new("load_failed", format!("{} at {}", e, e.step())))?;
            Ok(describe(&plugin))
        }
        Request::Unload { plugin } => {
            if engine.unload(&plugin).await {
                Ok(Value::Null)
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
        } => {
            let Some(p) = engine.plugin(&plugin) else {
                return Err(Failure::new(
                    "not_loaded",
                    format!("{plugin} is not loaded"),
                ));
            };
            match p.call(&command, args).await? {
                Reply::Json(v) => Ok(v),
                Reply::Bytes(b) => Ok(match String::from_utf8(b) {
                    Ok(text) => json!({ "bytes_utf8": text }),
                    Err(e) => json!({ "bytes_len": e.as_bytes().len() }),
                }),
            }
        }
        Request::Stats {} => Ok(serde_json::to_value(engine.plugins()).unwrap_or(Value::Null)),
        Request::Shutdown {} | Request::HostReply { .. } => Ok(Value::Null),
    }
}

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

fn answer(id: Value, result: Result<Value, Failure>) -> Value {
    match result {
        Ok(result) => json!({ "id": id, "ok": true, "result": result }),
        Err(f) => {
            let mut error = json!({ "code": f.code, "message": f.message });
            if let Some(tb) = f.traceback {
                error["traceback"] = Value::String(tb);
            }
            json!({ "id": id, "ok": false, "error": error })
        }
    }
}
