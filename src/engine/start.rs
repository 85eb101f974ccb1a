//! The steps of starting one instance, in order (see [`super::Engine`]'s `start` in
//! `load.rs`, which runs them). Each step takes what the ones before it made, and nothing else:
//! 1. the plugin's identity ([`plugin_info`]);
//! 2. (and 3.) the confined child and its channel ([`spawn`]): forked from the plugin's zygote
//!    (`super::zygote`), or spawned under a uid of its own holding one end of a new
//!    socketpair ([`channel`]);
//! 4. the host-death watchdog over its process group ([`watch_tree`]), before anything can fail
//!    with the child unwatched (a forked instance is in its template's group, already held);
//! 5. the `spawn` record and `spawning → handshaking` ([`record_spawn`]);
//! 6. the child's output forwarded ([`forward_output`]), the host end split into a frame
//!    reader and a write half ([`split`]);
//! 7. the handshake: `hello`, checked, answered with `welcome` or `refuse` ([`handshake`]);
//! 8. the session, its reader and its writer ([`open_session`]).
//!
//! Then teardown takes over the tree, the first health probe, and `handshaking → ready`.

use super::evidence::StderrTail;
use super::handshake::{check_hello, refusal};
use super::lifecycle::{record_transition, State};
use super::load::KillOnDrop;
use super::uids::UidLease;
use super::validate::Validated;
use super::zygote::TemplateGroup;
use super::Engine;
use super::{Inner, LoadError};
use crate::audit::{escape_text, EventKind, Record, Subject};
use crate::broker::arg_schema::CommandSchemas;
use crate::broker::session::Terms;
use crate::broker::stats::Stats;
use crate::broker::Session;
use crate::capability::PluginInfo;
use crate::ipc::frame::{MAX_FRAME_BYTES, MAX_HEADER_BYTES};
use crate::ipc::message::{Message, WireError, WireLimits, PROTOCOL_VERSION};
use crate::ipc::ErrorCode;
use crate::sandbox::tree::Tree;
use crate::sandbox::{Environment, SpawnRequest};
use crate::sys;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{ChildStderr, ChildStdout, Stdio};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Socket buffer size of each channel end.
const CHANNEL_BUFFER_BYTES: i32 = 4 * 1024 * 1024;
/// Frames queued towards one plugin before senders wait (each at most one frame cap).
const OUTBOX_FRAMES: usize = 8;

/// The host end of the channel, read as frames.
pub(super) type Reader = crate::broker::session::PluginReader;

/// Step 1: Who the instance is: names, directories, digest.
pub(super) fn plugin_info(v: &Validated, subject: &Subject) -> Result<Arc<PluginInfo>, LoadError> {
    // Made (0700, without following a symlink) once per activation, with the data
    // directory inside it: `STATE/<key>/data`.
    let state_dir =
        v.fs.path()
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| LoadError::Host("the data directory has no parent".into()))?;
    Ok(Arc::new(PluginInfo {
        name: v.manifest.name.clone(),
        version: v.manifest.version.to_string(),
        instance: subject.instance.clone(),
        dir: v.manifest.dir.clone(),
        state_dir,
        data_dir: v.fs.path().to_owned(),
        digest: subject.digest.clone().unwrap_or_default(),
        fs: Arc::clone(&v.fs),
    }))
}

/// Step 2: The channel: `(host end, plugin end)`, with large buffers so that bulk bodies stream in
/// few wake-ups (forced past the sysctl cap as root).
pub(super) fn channel() -> Result<(OwnedFd, OwnedFd), LoadError> {
    let (host_end, plugin_end) =
        sys::socketpair_stream().map_err(|e| LoadError::Host(format!("socketpair: {e}")))?;
    for end in [&host_end, &plugin_end] {
        sys::set_socket_buffers(end.as_raw_fd(), CHANNEL_BUFFER_BYTES)
            .map_err(|e| LoadError::Host(format!("socket buffers: {e}")))?;
    }
    Ok((host_end, plugin_end))
}

/// What step 3 started: the instance's process and the host's ends of its channel and output.
pub(super) struct Spawned {
    /// What ends it.
    pub(super) tree: Tree,
    /// The host's end of its channel.
    pub(super) channel: OwnedFd,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// The names of its environment.
    env_names: Vec<String>,
    /// The ids it runs as, when not the policy's.
    ids: Option<(u32, u32)>,
    /// Its uid, when it has one of its own (a forked instance shares its template's).
    pub(super) lease: Option<UidLease>,
    /// The template's group, for an instance forked from the zygote.
    pub(super) zygote: Option<Arc<TemplateGroup>>,
    /// How the zygote took part, for the spawn record.
    zygote_detail: Option<serde_json::Value>,
}

/// Step 3: The confined child, forked from the plugin's zygote when its policy has one and
/// it can (running as the template's uid), otherwise spawned (fork, confinement, exec) under a
/// uid of its own, inheriting its end of the channel.
pub(super) async fn spawn(
    engine: &Engine,
    v: &Validated,
    info: &PluginInfo,
) -> Result<Spawned, LoadError> {
    let mut zygote_detail = None;
    if let Some(zygote) = &v.zygote {
        match zygote.fork(engine, v, &info.instance).await {
            Ok(forked) => {
                // The names only: the child sets the channel (at the number the template
                // received) and its instance name before it says hello.
                let env_names = instance_env(v, info, -1).names();
                let detail =
                    serde_json::json!({ "role": "instance", "template": forked.group.pgid() });
                return Ok(Spawned {
                    tree: Tree::Process(forked.pid),
                    channel: forked.channel,
                    stdout: Some(ChildStdout::from(forked.stdout)),
                    stderr: Some(ChildStderr::from(forked.stderr)),
                    env_names,
                    ids: forked.ids,
                    lease: None,
                    zygote: Some(forked.group),
                    zygote_detail: Some(detail),
                });
            }
            Err(why) => {
                zygote_detail = Some(serde_json::json!({ "unavailable": escape_text(&why) }))
            }
        }
    }
    let lease = engine.lease_for(v)?;
    let ids = lease
        .as_ref()
        .filter(|l| l.is_pooled())
        .map(|l| (l.id(), l.id()));
    let (channel, plugin_end) = self::channel()?;
    let env = instance_env(v, info, plugin_end.as_raw_fd());
    let env_names = env.names();
    let request = SpawnRequest {
        // -u: stdout and stderr unbuffered, so each line reaches the host as it is printed
        // and none is lost when the plugin dies (-I ignores PYTHONUNBUFFERED).
        // Without an environment -S too: no `site`, nothing but the standard library and
        // the SDK. With one, `site` adds its site-packages and runs its `.pth` files, here,
        // inside the sandbox (the SDK stays first on sys.path).
        args: super::python_env::interpreter_args(
            v.python_env.as_ref(),
            bootstrap(v, "_runtime", "r"),
        ),
        env,
        stdin: Stdio::null(),
        stdout: Stdio::piped(),
        stderr: Stdio::piped(),
        keep_fd: Some(plugin_end.as_raw_fd()),
        ids,
    };
    let mut child = crate::sandbox::spawn(&v.prepared, request)?;
    Ok(Spawned {
        tree: Tree::Group(child.pid),
        channel,
        stdout: child.child.stdout.take(),
        stderr: child.child.stderr.take(),
        env_names,
        ids,
        lease,
        zygote: None,
        zygote_detail,
    })
}

/// An instance's environment, its channel at `fd`.
fn instance_env(v: &Validated, info: &PluginInfo, fd: i32) -> Environment {
    let mut env = plugbox_env(v, "PLUGBOX_FD", fd);
    env.set("PLUGBOX_INSTANCE".as_ref(), info.instance.as_ref());
    env
}

/// The clean environment every process of `v` gets: its name and version, and descriptor
/// `fd` named by `fd_var` (an instance's channel, or a zygote template's control socket).
pub(super) fn plugbox_env(v: &Validated, fd_var: &str, fd: i32) -> Environment {
    let mut env = Environment::clean();
    env.set(fd_var.as_ref(), fd.to_string().as_ref());
    env.set("PLUGBOX_PLUGIN_NAME".as_ref(), v.manifest.name.as_ref());
    env.set(
        "PLUGBOX_PLUGIN_VERSION".as_ref(),
        v.manifest.version.to_string().as_ref(),
    );
    env
}

/// The interpreter's `-c` program: the SDK first on `sys.path`, then `module.main(entry, dir)`.
pub(super) fn bootstrap(v: &Validated, module: &str, alias: &str) -> String {
    format!(
        "import sys; sys.path[:0]=[{}]; import plugbox.{module} as {alias}; {alias}.main({}, {})",
        py_str(&v.sdk),
        py_str(&v.manifest.entry),
        py_str(&v.manifest.dir)
    )
}

/// Step 4: From here a host death kills the whole group, grandchildren included; dropping the
/// guard kills it now.
pub(super) fn watch_tree(inner: &Inner, tree: Tree) -> Result<KillOnDrop, LoadError> {
    let guard = KillOnDrop(Some(tree), Arc::clone(&inner.watchdog));
    // A forked instance is in its template's group, which the watchdog already holds.
    if tree.is_group() {
        inner
            .watchdog
            .register(tree.pid())
            .map_err(|e| LoadError::Host(format!("lifetime: host-death watchdog: {e}")))?;
    }
    Ok(guard)
}

/// Step 5: The `spawn` record (the enforcement report) and `spawning → handshaking`.
pub(super) fn record_spawn(
    inner: &Inner,
    v: &Validated,
    subject: &Subject,
    spawned: &Spawned,
) -> Result<(), LoadError> {
    let env_names = spawned.env_names.clone();
    let mut r = spawn_record(v, subject, spawned.tree.pid(), spawned.ids, env_names);
    if let (Some(zygote), Some(detail)) = (&spawned.zygote_detail, r.detail.as_mut()) {
        detail["zygote"] = zygote.clone();
    }
    inner.audit.write(&r)?;
    record_transition(
        &inner.audit,
        subject,
        Some(State::Spawning),
        State::Handshaking,
        None,
    )?;
    Ok(())
}

/// The `spawn` record of process `pid` of `v`, running as `ids` (when not the policy's) with
/// the variables `env_names`: its enforcement report, and its Python environment if any.
pub(super) fn spawn_record(
    v: &Validated,
    subject: &Subject,
    pid: libc::pid_t,
    ids: Option<(u32, u32)>,
    env_names: Vec<String>,
) -> Record {
    let mut report = v.prepared.report(env_names);
    if let Some((uid, gid)) = ids {
        (report.uid, report.gid) = (uid, gid);
    }
    let mut r = Record::new(EventKind::Spawn, subject.clone());
    r.detail = Some(serde_json::json!({ "pid": pid, "enforcement": report }));
    if let (Some(env), Some(detail)) = (&v.python_env, r.detail.as_mut()) {
        detail["python_env"] = env.report();
    }
    r
}

/// How the plugin's `hello` was answered.
pub(super) enum Hello {
    /// `welcome`: the commands it exported, and their argument schemas.
    Accepted(Vec<String>, CommandSchemas),
    /// `refuse` (recorded): why, and whether the plugin may still be exiting on its own (it
    /// answered in time) rather than being killed at once.
    Refused(LoadError, bool),
}

/// Step 7: Reads `hello` (within the handshake timeout), checks it, and answers: `welcome` with the
/// grants and limits, or `refuse`. Each outcome is recorded.
pub(super) async fn handshake(
    inner: &Inner,
    v: &Validated,
    subject: &Subject,
    reader: &mut Reader,
    write_half: &mut OwnedWriteHalf,
) -> Result<Hello, LoadError> {
    let manifest = &v.manifest;
    let hello = tokio::time::timeout(inner.config.handshake_timeout, reader.next()).await;
    // A plugin that missed the deadline has had its chance; any other may still be exiting.
    let let_it_exit = hello.is_ok();
    let (commands, schemas) = match check_hello(manifest, hello) {
        Ok(accepted) => accepted,
        Err(e) => {
            let why = refusal(&e);
            let refuse = Message::Refuse {
                error: WireError {
                    code: ErrorCode::Invalid,
                    message: why.clone(),
                    traceback: None,
                },
            };
            let _ = write_half.write_all(&refuse.encode(&[])).await;
            let mut r = Record::new(EventKind::Handshake, subject.clone());
            r.decision = Some("deny");
            r.reason = Some(escape_text(&why));
            inner.audit.write(&r)?;
            return Ok(Hello::Refused(e, let_it_exit));
        }
    };
    let welcome = Message::Welcome {
        protocol: PROTOCOL_VERSION,
        instance: subject.instance.clone(),
        capabilities: v.gate.names(),
        limits: WireLimits {
            max_frame_bytes: MAX_FRAME_BYTES,
            max_header_bytes: MAX_HEADER_BYTES,
            max_in_flight: manifest.policy.limits().calls_in_flight,
        },
    };
    write_half
        .write_all(&welcome.encode(&[]))
        .await
        .map_err(|e| LoadError::Handshake(format!("cannot send welcome: {e}")))?;
    let mut r = Record::new(EventKind::Handshake, subject.clone());
    r.decision = Some("allow");
    let validated: Vec<&str> = schemas.sent().keys().map(String::as_str).collect();
    r.detail = Some(serde_json::json!({
        "commands": commands,
        "capabilities": v.gate.names(),
        "arg_schemas": validated,
    }));
    inner.audit.write(&r)?;
    Ok(Hello::Accepted(commands, schemas))
}

/// Step 8: The session over the channel, its reader task and its writer task.
pub(super) fn open_session(
    inner: &Inner,
    v: &Validated,
    info: &Arc<PluginInfo>,
    (commands, schemas): (Vec<String>, CommandSchemas),
    stats: Arc<Stats>,
    (reader, write_half): (Reader, OwnedWriteHalf),
) -> Arc<Session> {
    let (out_tx, out_rx) = mpsc::channel(OUTBOX_FRAMES);
    let session = Session::new(
        Arc::clone(info),
        Arc::clone(&inner.audit),
        out_tx,
        Arc::new(tokio::sync::Mutex::new(write_half)),
        Terms {
            gate: Arc::clone(&v.gate),
            commands,
            schemas: Arc::new(schemas),
            call_timeout: v.manifest.policy.limits().call_timeout,
            stats,
            max_body_bytes: crate::ipc::bulk::body_limit(v.manifest.policy.limits().memory_bytes),
        },
    );
    let span = tracing::info_span!("plugin", name = %info.name, version = %info.version, instance = %info.instance);
    tokio::spawn(writer(out_rx, Arc::clone(&session)));
    tokio::spawn(Arc::clone(&session).run_reader(reader).instrument(span));
    session
}

/// Step 6: The host end of the channel as a frame reader and a write half.
pub(super) fn split(host_end: OwnedFd) -> Result<(Reader, OwnedWriteHalf), LoadError> {
    let std_stream = std::os::unix::net::UnixStream::from(host_end);
    std_stream
        .set_nonblocking(true)
        .map_err(|e| LoadError::Host(e.to_string()))?;
    let stream =
        tokio::net::UnixStream::from_std(std_stream).map_err(|e| LoadError::Host(e.to_string()))?;
    let (read_half, write_half) = stream.into_split();
    Ok((crate::broker::session::plugin_reader(read_half), write_half))
}

/// Step 6: The stderr tail kept for a failure's evidence, and the forwarding of the child's output.
pub(super) fn forward_output(
    inner: &Inner,
    v: &Validated,
    info: &Arc<PluginInfo>,
    spawned: &mut Spawned,
) -> (Arc<StderrTail>, super::output::Forwarders) {
    let tail = StderrTail::new();
    let forwarders = super::output::forward(
        info,
        &inner.audit,
        spawned.stdout.take(),
        spawned.stderr.take(),
        v.manifest.policy.limits().output_bytes,
        &tail,
    );
    (tail, forwarders)
}

/// Sends frames queued from contexts that cannot wait (a dropped call's `cancel`).
async fn writer(mut rx: mpsc::Receiver<crate::ipc::message::Outgoing>, session: Arc<Session>) {
    while let Some(frame) = rx.recv().await {
        if !session.write(frame).await {
            return;
        }
    }
}

/// A Python string literal (JSON strings are valid Python literals).
pub(super) fn py_str(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).unwrap_or_else(|_| "''".into())
}
