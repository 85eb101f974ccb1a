//! Starting one plugin instance: validation once (manifest, grants, digest, sandbox
//! preparation), then per instance: spawn, handshake, first health probe. Atomic: on any
//! failure the process tree is killed, a `load_refused` record names the step, and nothing
//! stays running.

use super::evidence::{self, StderrTail};
use super::handshake::check_hello;
use super::instance::Instance;
use super::lifecycle::{record_transition, State};
use super::uids::UidLease;
use super::validate::Validated;
use super::{output, teardown, Engine, LoadError};
use crate::audit::{escape_text, EventKind, Record, Subject};
use crate::broker::channel::ChannelReader;
use crate::broker::session::Terms;
use crate::broker::stats::Stats;
use crate::broker::Session;
use crate::capability::PluginInfo;
use crate::ipc::frame::{FrameLimits, MAX_FRAME_BYTES, MAX_HEADER_BYTES};
use crate::ipc::message::{Message, WireError, WireLimits, PROTOCOL_VERSION};
use crate::ipc::{ErrorCode, FrameReader};
use crate::manifest::Grants;
use crate::sandbox::{spawn, tree, Environment, SpawnRequest};
use crate::sys;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Where interpreters named by `plugin.runtime` are looked up (never the host's `PATH`).
pub const RUNTIME_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Socket buffer size of each channel end.
const CHANNEL_BUFFER_BYTES: i32 = 4 * 1024 * 1024;
/// Frames queued towards one plugin before senders wait (each at most one frame cap).
const OUTBOX_FRAMES: usize = 8;

impl Engine {
    /// Starts one **unmanaged** instance of the plugin in `dir` under `grants`: validated,
    /// confined, spawned, handshaken and probed once. Nothing restarts it and the engine does
    /// not register it; most hosts want [`Engine::load`] instead.
    pub async fn spawn_instance(&self, dir: &Path, grants: &Grants) -> Result<Instance, LoadError> {
        let validated = self.validate(dir, grants)?;
        self.start_instance(&validated, Arc::default()).await
    }

    /// Spawns, handshakes and probes one instance of `validated`; its calls count into
    /// `stats`. Atomic: on failure the tree is killed and a `load_refused` record names the
    /// step.
    pub(crate) async fn start_instance(
        &self,
        validated: &Validated,
        stats: Arc<Stats>,
    ) -> Result<Instance, LoadError> {
        let instance = format!(
            "{}#{}",
            validated.manifest.name,
            self.inner.next_instance.fetch_add(1, Ordering::AcqRel)
        );
        let subject = Subject {
            instance,
            ..validated.subject.clone()
        };
        let max = self.inner.config.max_plugins;
        if self.inner.live.fetch_add(1, Ordering::AcqRel) >= max {
            self.inner.live.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refused(&subject, LoadError::Capacity(max)));
        }
        let lease = if self.uses_pool(&validated.prepared) {
            let acquired = match self.inner.uids.as_ref() {
                Some(pool) => pool.acquire().map_err(|e| LoadError::Host(e.to_string())),
                None => Ok(None),
            };
            match acquired {
                Ok(Some(lease)) => Some(lease),
                Ok(None) => {
                    self.inner.live.fetch_sub(1, Ordering::AcqRel);
                    let e = LoadError::Host(
                        "no free uid left in the engine's uid pool (others are held by \
                         instances of this or another engine on the host)"
                            .into(),
                    );
                    return Err(self.refused(&subject, e));
                }
                Err(e) => {
                    self.inner.live.fetch_sub(1, Ordering::AcqRel);
                    return Err(self.refused(&subject, e));
                }
            }
        } else {
            Some(self.inner.shared_uids.hold(validated.prepared.ids().0))
        };
        let started = record_transition(&self.inner.audit, &subject, None, State::Spawning, None)
            .map_err(LoadError::from);
        let result = match started {
            Ok(()) => self.start(validated, subject.clone(), stats, lease).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(instance) => Ok(instance),
            Err(e) => {
                self.inner.live.fetch_sub(1, Ordering::AcqRel);
                let _ = record_transition(
                    &self.inner.audit,
                    &subject,
                    None,
                    State::Failed,
                    Some(&format!("{}: {}", e.step(), e.summary())),
                );
                Err(self.refused(&subject, e))
            }
        }
    }

    async fn start(
        &self,
        validated: &Validated,
        subject: Subject,
        stats: Arc<Stats>,
        lease: Option<UidLease>,
    ) -> Result<Instance, LoadError> {
        let config = &self.inner.config;
        let manifest = &validated.manifest;
        let prepared = &validated.prepared;
        let gate = Arc::clone(&validated.gate);
        let ids = lease
            .as_ref()
            .filter(|l| l.is_pooled())
            .map(|l| (l.id(), l.id()));
        // Made (0700, without following a symlink) once per activation, with the data
        // directory inside it: `STATE/<key>/data`.
        let state_dir = validated
            .fs
            .path()
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| LoadError::Host("the data directory has no parent".into()))?;
        let info = Arc::new(PluginInfo {
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            instance: subject.instance.clone(),
            dir: manifest.dir.clone(),
            state_dir,
            data_dir: validated.fs.path().to_owned(),
            digest: subject.digest.clone().unwrap_or_default(),
            fs: Arc::clone(&validated.fs),
        });
        let (host_end, plugin_end) =
            sys::socketpair_stream().map_err(|e| LoadError::Host(format!("socketpair: {e}")))?;
        // Large buffers let bulk bodies stream in few wakeups (forced past the sysctl cap as root).
        for end in [&host_end, &plugin_end] {
            sys::set_socket_buffers(end.as_raw_fd(), CHANNEL_BUFFER_BYTES)
                .map_err(|e| LoadError::Host(format!("socket buffers: {e}")))?;
        }
        let mut env = Environment::clean();
        env.set(
            "PLUGBOX_FD".as_ref(),
            plugin_end.as_raw_fd().to_string().as_ref(),
        );
        env.set("PLUGBOX_PLUGIN_NAME".as_ref(), manifest.name.as_ref());
        env.set("PLUGBOX_PLUGIN_VERSION".as_ref(), info.version.as_ref());
        env.set("PLUGBOX_INSTANCE".as_ref(), info.instance.as_ref());
        let bootstrap = format!(
            "import sys; sys.path[:0]=[{}]; import plugbox._runtime as r; r.main({}, {})",
            py_str(&validated.sdk),
            py_str(&manifest.entry),
            py_str(&manifest.dir)
        );
        let env_names = env.names();
        let request = SpawnRequest {
            // -u: stdout and stderr unbuffered, so each line reaches the host as it is printed
            // and none is lost when the plugin dies (-I ignores PYTHONUNBUFFERED).
            // Without an environment -S too: no `site`, nothing but the standard library and
            // the SDK. With one, `site` adds its site-packages and runs its `.pth` files, here,
            // inside the sandbox (the SDK stays first on sys.path).
            args: super::python_env::interpreter_args(validated.python_env.as_ref(), bootstrap),
            env,
            stdin: Stdio::null(),
            stdout: Stdio::piped(),
            stderr: Stdio::piped(),
            keep_fd: Some(plugin_end.as_raw_fd()),
            ids,
        };
        let mut child = spawn(prepared, request)?;
        drop(plugin_end);
        let pid = child.pid;
        let guard = KillOnDrop(pid, Arc::clone(&self.inner.watchdog));
        // From here a host death kills the whole group, grandchildren included.
        self.inner
            .watchdog
            .register(pid)
            .map_err(|e| LoadError::Host(format!("lifetime: host-death watchdog: {e}")))?;
        let mut report = prepared.report(env_names);
        if let Some((uid, gid)) = ids {
            (report.uid, report.gid) = (uid, gid);
        }
        let mut r = Record::new(EventKind::Spawn, subject.clone());
        r.detail = Some(serde_json::json!({ "pid": pid, "enforcement": report }));
        if let (Some(env), Some(detail)) = (&validated.python_env, r.detail.as_mut()) {
            detail["python_env"] = env.report();
        }
        self.inner.audit.write(&r)?;
        let audit = &self.inner.audit;
        record_transition(
            audit,
            &subject,
            Some(State::Spawning),
            State::Handshaking,
            None,
        )?;
        let tail = StderrTail::new();
        let forwarders = output::forward(
            &info,
            &self.inner.audit,
            child.child.stdout.take(),
            child.child.stderr.take(),
            manifest.policy.limits().output_bytes,
            &tail,
        );

        let std_stream = std::os::unix::net::UnixStream::from(host_end);
        std_stream
            .set_nonblocking(true)
            .map_err(|e| LoadError::Host(e.to_string()))?;
        let stream = tokio::net::UnixStream::from_std(std_stream)
            .map_err(|e| LoadError::Host(e.to_string()))?;
        let (read_half, mut write_half) = stream.into_split();
        let mut reader = FrameReader::new(ChannelReader::new(read_half), FrameLimits::default());
        let hello = tokio::time::timeout(config.handshake_timeout, reader.next()).await;
        // A plugin that missed the deadline has had its chance; any other may still be exiting.
        let let_it_exit = hello.is_ok();
        let commands = match check_hello(manifest, hello) {
            Ok(commands) => commands,
            Err(why) => {
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
                self.inner.audit.write(&r)?;
                let reap = move || guard.reap();
                let e = LoadError::Handshake(why);
                return Err(evidence::before_hello(e, pid, reap, &tail, let_it_exit).await);
            }
        };
        let welcome = Message::Welcome {
            protocol: PROTOCOL_VERSION,
            instance: info.instance.clone(),
            capabilities: gate.names(),
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
        r.detail = Some(serde_json::json!({ "commands": commands, "capabilities": gate.names() }));
        self.inner.audit.write(&r)?;

        let (out_tx, out_rx) = mpsc::channel(OUTBOX_FRAMES);
        let shared = Arc::new(tokio::sync::Mutex::new(write_half));
        let session = Session::new(
            Arc::clone(&info),
            Arc::clone(&self.inner.audit),
            out_tx,
            Arc::clone(&shared),
            Terms {
                gate,
                commands,
                call_timeout: manifest.policy.limits().call_timeout,
                stats,
                max_body_bytes: crate::ipc::bulk::body_limit(manifest.policy.limits().memory_bytes),
            },
        );
        let span = tracing::info_span!("plugin", name = %info.name, version = %info.version, instance = %info.instance);
        tokio::spawn(writer(out_rx, Arc::clone(&session)));
        tokio::spawn(Arc::clone(&session).run_reader(reader).instrument(span));
        let exit = teardown::start(
            Arc::clone(&session),
            Arc::clone(&self.inner.audit),
            pid,
            manifest.policy.limits().wall_seconds,
            Arc::clone(&self.inner.live),
            lease,
            Arc::clone(&self.inner.watchdog),
            forwarders,
        )
        .map_err(|e| LoadError::Host(format!("pidfd: {e}")))?;
        // From here the teardown task owns the process tree: dropping the instance kills it.
        std::mem::forget(guard);
        let instance = Instance::new(session, info, pid, exit);
        let timeout = manifest.policy.supervision().health_timeout;
        if let Err(e) = instance.ping(timeout).await {
            let e = LoadError::Health(e.message);
            let e = evidence::after_hello(e, instance, &tail).await;
            // Its teardown gave its slot back; `start_instance` gives it back again on error.
            self.inner.live.fetch_add(1, Ordering::AcqRel);
            return Err(e);
        }
        record_transition(
            audit,
            &subject,
            Some(State::Handshaking),
            State::Ready,
            None,
        )?;
        Ok(instance)
    }
}

/// Kills the process tree if loading stops half way (then the watchdog forgets the group).
struct KillOnDrop(libc::pid_t, Arc<crate::sandbox::Watchdog>);

impl KillOnDrop {
    /// Kills the tree now (blocking: run it off the runtime), returns the status of its first
    /// process if reaped here, and forgets the group in the watchdog.
    fn reap(mut self) -> Option<sys::WaitStatus> {
        let status = tree::kill_tree(self.0, self.0).ok().flatten();
        let _ = self.1.unregister(self.0);
        self.0 = 0; // disarmed: nothing left to kill
        status
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0 <= 0 {
            return;
        }
        let _ = tree::kill_tree(self.0, self.0);
        let _ = self.1.unregister(self.0);
    }
}

/// Sends frames queued from contexts that cannot wait (a dropped call's `cancel`).
async fn writer(mut rx: mpsc::Receiver<crate::ipc::message::Outgoing>, session: Arc<Session>) {
    while let Some(frame) = rx.recv().await {
        if !session.write(frame).await {
            return;
        }
    }
}

/// The name of a plugin's state directory: its manifest name (for people reading the
/// directory) and the first 16 hex digits of the sha256 of its canonical directory path. The
/// name alone is not an identity: any other directory may claim it.
pub(super) fn state_key(manifest: &crate::manifest::Manifest) -> String {
    use sha2::Digest;
    use std::os::unix::ffi::OsStrExt;
    let digest = sha2::Sha256::digest(manifest.dir.as_os_str().as_bytes());
    let hex = crate::audit::chain::hex(&digest);
    format!("{}-{}", manifest.name, hex.get(..16).unwrap_or(&hex))
}

/// A Python string literal (JSON strings are valid Python literals).
fn py_str(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).unwrap_or_else(|_| "''".into())
}
