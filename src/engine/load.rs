//! Loading one plugin: manifest, grants, sandbox, spawn, handshake. Atomic: on any failure the
//! process tree is killed, a `load_refused` record names the step, and nothing stays running.

use super::plugin::Plugin;
use super::{output, supervise, Engine};
use crate::audit::{escape_text, EventKind, Record, Subject};
use crate::broker::channel::ChannelReader;
use crate::broker::gate::{Gate, Granted};
use crate::broker::Session;
use crate::capability::PluginInfo;
use crate::ipc::frame::{FrameLimits, MAX_FRAME_BYTES, MAX_HEADER_BYTES};
use crate::ipc::message::{Message, PluginIdentity, WireError, WireLimits, PROTOCOL_VERSION};
use crate::ipc::{ErrorCode, FrameReader};
use crate::manifest::{Grants, Manifest, ManifestError};
use crate::sandbox::command::{check_dir_reachable, CommandError};
use crate::sandbox::{spawn, tree, Environment, PrepareError, Prepared, SpawnError, SpawnRequest};
use crate::sys;
use std::collections::HashMap;
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

/// Why a plugin could not be loaded. Each variant is one step.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest, API check or grants refused it.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A capability it requires does not exist in this host.
    #[error("load: {plugin} requires capabilities this host does not provide: {}", missing.join(", "))]
    UnknownCapabilities {
        /// The plugin.
        plugin: String,
        /// The names.
        missing: Vec<String>,
    },
    /// The sandbox uid cannot reach the plugin or the SDK.
    #[error("load: {0}")]
    Reach(#[from] CommandError),
    /// The sandbox cannot be prepared as the policy demands.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The process could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The handshake failed.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// A host resource failed.
    #[error("load: {0}")]
    Host(String),
    /// The engine already runs its maximum number of plugins.
    #[error("load: the engine already runs its maximum of {0} plugins")]
    Capacity(usize),
}

impl Engine {
    /// Loads, confines, spawns and handshakes the plugin in `dir` under `grants`.
    pub async fn load(&self, dir: &Path, grants: &Grants) -> Result<Plugin, LoadError> {
        let manifest = match Manifest::load(dir) {
            Ok(m) => m,
            Err(e) => return Err(self.refused(&unknown_subject(dir), e.into())),
        };
        let instance = format!(
            "{}#{}",
            manifest.name,
            self.inner.next_instance.fetch_add(1, Ordering::AcqRel)
        );
        let digest = match crate::manifest::digest::code_digest(&manifest.dir) {
            Ok(d) => d,
            Err(e) => {
                let subject = unknown_subject(dir);
                return Err(self.refused(&subject, LoadError::Host(format!("code digest: {e}"))));
            }
        };
        let subject = Subject {
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            instance: instance.clone(),
            digest: Some(digest.clone()),
        };
        if let Err(e) = grants.check_digest(&manifest.name, &digest) {
            return Err(self.refused(&subject, e.into()));
        }
        let gate = match self.gate_for(&manifest, grants) {
            Ok(g) => g,
            Err(e) => return Err(self.refused(&subject, e)),
        };
        let max = self.inner.config.max_plugins;
        if self.inner.live.fetch_add(1, Ordering::AcqRel) >= max {
            self.inner.live.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refused(&subject, LoadError::Capacity(max)));
        }
        match self.start(manifest, subject.clone(), gate).await {
            Ok(plugin) => Ok(plugin),
            Err(e) => {
                self.inner.live.fetch_sub(1, Ordering::AcqRel);
                Err(self.refused(&subject, e))
            }
        }
    }

    fn refused(&self, subject: &Subject, error: LoadError) -> LoadError {
        let mut r = Record::new(EventKind::LoadRefused, subject.clone());
        r.decision = Some("deny");
        r.reason = Some(escape_text(&error.to_string()));
        match self.inner.audit.write(&r) {
            Ok(_) => error,
            Err(audit) => LoadError::Audit(audit),
        }
    }

    fn gate_for(&self, manifest: &Manifest, grants: &Grants) -> Result<Gate, LoadError> {
        manifest.check_api(&self.inner.config.api_version)?;
        let effective = manifest.effective(grants)?;
        let caps = self
            .inner
            .capabilities
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut allowed = HashMap::new();
        let mut missing = Vec::new();
        for cap in effective {
            match caps.get(&cap.name) {
                Some(handler) => {
                    let max_bytes = cap.max_bytes.unwrap_or_else(Engine::default_max_bytes);
                    let granted = Granted {
                        handler: Arc::clone(handler),
                        max_bytes,
                        grant: Arc::new(cap.clone()),
                    };
                    allowed.insert(cap.name.clone(), granted);
                }
                None if manifest
                    .requested
                    .get(&cap.name)
                    .is_some_and(|r| r.optional) => {}
                None => missing.push(cap.name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(LoadError::UnknownCapabilities {
                plugin: manifest.name.clone(),
                missing,
            });
        }
        let l = manifest.policy.limits();
        Ok(Gate::new(
            allowed,
            l.calls_per_second,
            l.call_burst,
            l.calls_in_flight,
        ))
    }

    async fn start(
        &self,
        manifest: Manifest,
        subject: Subject,
        gate: Gate,
    ) -> Result<Plugin, LoadError> {
        let config = &self.inner.config;
        let sdk = config
            .sdk_dir
            .canonicalize()
            .map_err(|e| LoadError::Host(format!("SDK {}: {e}", config.sdk_dir.display())))?;
        let policy = manifest
            .policy
            .clone()
            .with_read_paths([manifest.dir.clone(), sdk.clone()]);
        let prepared = Prepared::new(
            policy,
            manifest.runtime.as_ref(),
            Some(RUNTIME_PATH.as_ref()),
        )?;
        let (uid, gid) = prepared.ids();
        if sys::geteuid() == 0 {
            check_dir_reachable(&manifest.dir, uid, gid)?;
            check_dir_reachable(&sdk, uid, gid)?;
        }
        let state_dir = config.state_dir.join(&manifest.name);
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| LoadError::Host(format!("state {}: {e}", state_dir.display())))?;
        let info = Arc::new(PluginInfo {
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            instance: subject.instance.clone(),
            dir: manifest.dir.clone(),
            state_dir,
            digest: subject.digest.clone().unwrap_or_default(),
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
            "import sys; sys.path[:0]=[{}]; import plugbox._runtime as r; r.main({})",
            py_str(&sdk),
            py_str(&manifest.entry)
        );
        let env_names = env.names();
        let request = SpawnRequest {
            args: vec!["-I".into(), "-S".into(), "-c".into(), bootstrap.into()],
            env,
            stdin: Stdio::null(),
            stdout: Stdio::piped(),
            stderr: Stdio::piped(),
            keep_fd: Some(plugin_end.as_raw_fd()),
        };
        let mut child = spawn(&prepared, request)?;
        drop(plugin_end);
        let pid = child.pid;
        let guard = KillOnDrop(pid);
        let mut r = Record::new(EventKind::Spawn, subject.clone());
        r.detail =
            Some(serde_json::json!({ "pid": pid, "enforcement": prepared.report(env_names) }));
        self.inner.audit.write(&r)?;
        output::forward(
            &info,
            &self.inner.audit,
            child.child.stdout.take(),
            child.child.stderr.take(),
            manifest.policy.limits().output_bytes,
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
        let commands = match check_hello(&manifest, hello) {
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
                return Err(LoadError::Handshake(why));
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
            gate,
            commands,
            manifest.policy.limits().call_timeout,
        );
        let span = tracing::info_span!("plugin", name = %info.name, version = %info.version, instance = %info.instance);
        tokio::spawn(writer(out_rx, Arc::clone(&session)));
        tokio::spawn(Arc::clone(&session).run_reader(reader).instrument(span));
        let exit = supervise::start(
            Arc::clone(&session),
            Arc::clone(&self.inner.audit),
            pid,
            manifest.policy.limits().wall_seconds,
            Arc::clone(&self.inner.live),
        )
        .map_err(|e| LoadError::Host(format!("pidfd: {e}")))?;
        // From here the supervisor owns the process tree.
        std::mem::forget(guard);
        Ok(Plugin::new(session, info, pid, exit))
    }
}

/// Kills the process tree if loading stops half way.
struct KillOnDrop(libc::pid_t);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = tree::kill_tree(self.0, self.0);
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

type HelloResult =
    Result<Result<Option<crate::ipc::Frame>, crate::ipc::FrameError>, tokio::time::error::Elapsed>;

/// Validates the plugin's `hello`; returns its commands or the reason to refuse.
fn check_hello(manifest: &Manifest, hello: HelloResult) -> Result<Vec<String>, String> {
    let frame = match hello {
        Err(_) => return Err("no hello before the handshake deadline".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(None)) => return Err("the plugin closed the channel before hello".into()),
        Ok(Ok(Some(frame))) => frame,
    };
    let message = Message::decode(&frame.header).map_err(|e| e.to_string())?;
    let Message::Hello {
        protocol,
        plugin,
        commands,
    } = message
    else {
        return Err("the first message must be hello".into());
    };
    if protocol < PROTOCOL_VERSION {
        return Err(format!(
            "protocol {protocol} not supported; host speaks {PROTOCOL_VERSION}"
        ));
    }
    let expected = PluginIdentity {
        name: manifest.name.clone(),
        version: manifest.version.to_string(),
    };
    if plugin != expected {
        return Err(format!(
            "hello names {} {}, the manifest {} {}",
            escape_text(&plugin.name),
            escape_text(&plugin.version),
            expected.name,
            expected.version
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &commands {
        let valid = !c.is_empty()
            && c.len() <= 64
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch));
        if !valid || !seen.insert(c) {
            return Err(format!(
                "invalid or duplicate command name {}",
                escape_text(c)
            ));
        }
    }
    Ok(commands)
}

/// A Python string literal (JSON strings are valid Python literals).
fn py_str(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).unwrap_or_else(|_| "''".into())
}

fn unknown_subject(dir: &Path) -> Subject {
    Subject {
        name: escape_text(&dir.display().to_string()),
        version: "unknown".into(),
        instance: "-".into(),
        digest: None,
    }
}
