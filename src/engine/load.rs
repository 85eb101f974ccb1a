//! Starting one plugin instance: validation once (manifest, grants, digest, sandbox
//! preparation), then per instance: spawn, handshake, first health probe. Atomic: on any
//! failure the process tree is killed, a `load_refused` record names the step, and nothing
//! stays running.

use super::instance::Instance;
use super::lifecycle::{record_transition, State};
use super::uids::UidLease;
use super::{output, teardown, Engine};
use crate::audit::{escape_text, EventKind, Record, Subject};
use crate::broker::channel::ChannelReader;
use crate::broker::gate::{Gate, Granted};
use crate::broker::session::Terms;
use crate::broker::stats::Stats;
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
use std::path::{Path, PathBuf};
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
    #[error("load: the engine already runs its maximum of {0} plugin processes")]
    Capacity(usize),
    /// The first health probe failed.
    #[error("health: the first health probe failed: {0}")]
    Health(String),
    /// A plugin of this name is loaded from other code or grants; use `reload`.
    #[error("load: {name} is already loaded as {loaded}; unload or reload it to change it")]
    Conflict {
        /// The plugin.
        name: String,
        /// What is loaded (version and digest).
        loaded: String,
    },
    /// The engine is shutting down.
    #[error("load: the engine is shutting down")]
    ShuttingDown,
    /// A reload asks for more than the loaded version, with the same grants.
    #[error("reload: {name} {version} asks for more than the loaded version without a new grant: {}", changes.join("; "))]
    Escalates {
        /// The plugin.
        name: String,
        /// The new version.
        version: String,
        /// Each escalation, as `field: old -> new`.
        changes: Vec<String>,
    },
}

impl LoadError {
    /// The activation step that failed, as recorded in `load_refused` records.
    pub fn step(&self) -> &'static str {
        match self {
            LoadError::Manifest(_)
            | LoadError::UnknownCapabilities { .. }
            | LoadError::Escalates { .. } => "validate",
            LoadError::Reach(_) | LoadError::Prepare(_) => "prepare",
            LoadError::Spawn(_) | LoadError::Capacity(_) => "spawn",
            LoadError::Handshake(_) => "handshake",
            LoadError::Health(_) => "health",
            LoadError::Audit(_) => "audit",
            LoadError::Host(_) => "host",
            LoadError::Conflict { .. } | LoadError::ShuttingDown => "register",
        }
    }
}

/// A plugin that passed every check that needs no process. Every instance of it, restarts
/// included, starts from this: the sandbox is prepared once per activation, not per spawn.
pub(crate) struct Validated {
    pub(crate) manifest: Manifest,
    pub(crate) grants: Grants,
    pub(crate) digest: String,
    /// The plugin's subject (instance `-`).
    pub(crate) subject: Subject,
    prepared: Prepared,
    sdk: PathBuf,
}

impl Engine {
    /// Starts one **unmanaged** instance of the plugin in `dir` under `grants`: validated,
    /// confined, spawned, handshaken and probed once. Nothing restarts it and the engine does
    /// not register it; most hosts want [`Engine::load`] instead.
    pub async fn spawn_instance(&self, dir: &Path, grants: &Grants) -> Result<Instance, LoadError> {
        let validated = self.validate(dir, grants)?;
        self.start_instance(&validated, Arc::default()).await
    }

    /// Every check that runs no plugin code, and the sandbox preparation. A refusal is
    /// audited (`load_refused`, naming the step).
    pub(crate) fn validate(&self, dir: &Path, grants: &Grants) -> Result<Validated, LoadError> {
        let manifest = match Manifest::load(dir) {
            Ok(m) => m,
            Err(e) => return Err(self.refused(&unknown_subject(dir), e.into())),
        };
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
            instance: "-".into(),
            digest: Some(digest.clone()),
        };
        if let Err(e) = grants.check_digest(&manifest.name, &digest) {
            return Err(self.refused(&subject, e.into()));
        }
        if let Err(e) = self.gate_for(&manifest, grants) {
            return Err(self.refused(&subject, e));
        }
        let (prepared, sdk) = match self.prepare(&manifest) {
            Ok(p) => p,
            Err(e) => return Err(self.refused(&subject, e)),
        };
        Ok(Validated {
            manifest,
            grants: grants.clone(),
            digest,
            subject,
            prepared,
            sdk,
        })
    }

    /// Builds the Landlock ruleset and seccomp program, and checks that the uid the plugin
    /// will run as can reach its directory and the SDK.
    fn prepare(&self, manifest: &Manifest) -> Result<(Prepared, PathBuf), LoadError> {
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
        if sys::geteuid() == 0 {
            let (uid, gid) = match (self.uses_pool(&prepared), &self.inner.uids) {
                (true, Some(pool)) => (pool.first(), pool.first()),
                _ => prepared.ids(),
            };
            check_dir_reachable(&manifest.dir, uid, gid)?;
            check_dir_reachable(&sdk, uid, gid)?;
        }
        Ok((prepared, sdk))
    }

    /// Does an instance of `prepared` take its uid from the engine's pool? Only when the host
    /// is root and the policy keeps the default identity (65534); an explicit one is kept.
    fn uses_pool(&self, prepared: &Prepared) -> bool {
        self.inner.uids.is_some() && sys::geteuid() == 0 && prepared.ids() == (65534, 65534)
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
            match self.inner.uids.as_ref().and_then(|pool| pool.acquire()) {
                Some(lease) => Some(lease),
                None => {
                    self.inner.live.fetch_sub(1, Ordering::AcqRel);
                    let e = LoadError::Host("no free uid left in the engine's uid pool".into());
                    return Err(self.refused(&subject, e));
                }
            }
        } else {
            None
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
                    Some(&format!("{}: {e}", e.step())),
                );
                Err(self.refused(&subject, e))
            }
        }
    }

    /// Audits a refusal (`load_refused`, naming the step) and returns the error.
    pub(crate) fn refused(&self, subject: &Subject, error: LoadError) -> LoadError {
        let mut r = Record::new(EventKind::LoadRefused, subject.clone());
        r.decision = Some("deny");
        r.reason = Some(escape_text(&error.to_string()));
        r.detail = Some(serde_json::json!({ "step": error.step() }));
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
        validated: &Validated,
        subject: Subject,
        stats: Arc<Stats>,
        lease: Option<UidLease>,
    ) -> Result<Instance, LoadError> {
        let config = &self.inner.config;
        let manifest = &validated.manifest;
        let prepared = &validated.prepared;
        let gate = self.gate_for(manifest, &validated.grants)?;
        let ids = lease.as_ref().map(|l| (l.id(), l.id()));
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
            py_str(&validated.sdk),
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
        self.inner.audit.write(&r)?;
        let audit = &self.inner.audit;
        record_transition(
            audit,
            &subject,
            Some(State::Spawning),
            State::Handshaking,
            None,
        )?;
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
            Terms {
                gate,
                commands,
                call_timeout: manifest.policy.limits().call_timeout,
                stats,
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
        )
        .map_err(|e| LoadError::Host(format!("pidfd: {e}")))?;
        // From here the teardown task owns the process tree: dropping the instance kills it.
        std::mem::forget(guard);
        let instance = Instance::new(session, info, pid, exit);
        let timeout = manifest.policy.supervision().health_timeout;
        if let Err(e) = instance.ping(timeout).await {
            return Err(LoadError::Health(e.message));
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

impl Drop for KillOnDrop {
    fn drop(&mut self) {
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
