//! The engine: loads plugins into sandboxes, connects them to the broker, and supervises them.
//!
//! ```no_run
//! use plugbox::engine::{Engine, EngineConfig};
//! use plugbox::capability::{typed, CallContext, CallError};
//! use plugbox::manifest::Grants;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new(EngineConfig::new("audit.jsonl", "state"))?;
//! engine.register("doc.get_text", typed(|_ctx: CallContext, _args: serde_json::Value| async {
//!     Ok::<_, CallError>("the document text")
//! }))?;
//! let plugin = engine.load("plugins/word-count".as_ref(), &Grants::all_requested()).await?;
//! let reply = plugin.call("count", serde_json::json!({"text": "a b c"})).await?;
//! println!("{reply:?} {:?}", plugin.stats());
//! engine.shutdown().await?; // unloads every plugin and seals the audit log
//! # Ok(()) }
//! ```

mod call_options;
mod ceiling;
mod code_guard;
mod data_dir;
mod describe;
mod drain;
pub mod events;
mod evidence;
mod fate;
mod handshake;
mod instance;
mod launcher;
mod lifecycle;
mod load;
mod load_error;
pub mod metrics;
mod output;
mod plugin;
mod pth_scan;
mod python_env;
mod registry;
mod restart;
mod start;
mod supervisor;
mod teardown;
mod uid_locks;
mod uids;
mod validate;
mod zygote;
pub(crate) use zygote::fuzz_answer as fuzz_zygote_answer;

pub use call_options::CallOptions;
pub use data_dir::plugin_data_dir;
pub use describe::PluginDescription;
pub use events::PluginEvent;
pub use evidence::{Evidence, TAIL_BYTES, TAIL_LINES};
pub use fate::signal_name;
pub use instance::{ExitInfo, Instance, SHUTDOWN_GRACE, TERM_GRACE};
pub use lifecycle::State;
pub use load::RUNTIME_PATH;
pub use load_error::LoadError;
pub use plugin::{Plugin, PluginStats};
pub use python_env::PythonEnvError;
pub use uid_locks::{UidLockError, DEFAULT_UID_LOCK_DIR};

use crate::audit::{AuditError, AuditLog, AuditOptions};
use crate::capability::fs::{Fs, FsOp};
use crate::capability::kv::{Kv, KvOp};
use crate::capability::kv_store::KvStores;
use crate::capability::log::Log;
use crate::capability::Capability;
use crate::ipc::frame::MAX_FRAME_BYTES;
use crate::manifest::CeilingMode;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use crate::manifest::HOST_API_VERSION;

/// Names of the built-in capabilities.
pub const BUILTIN_CAPABILITIES: &[&str] = &[
    "log",
    "fs.read",
    "fs.write",
    "fs.list",
    "kv.get",
    "kv.set",
    "kv.delete",
    "kv.list",
];

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Host API version plugins are checked against.
    pub api_version: semver::Version,
    /// The audit log (JSON Lines, appended).
    pub audit_log: PathBuf,
    /// Where per-plugin state lives: `state_dir/<name>-<id>/`, where `<id>` is the first 16
    /// hex digits of the sha256 of the plugin's canonical directory path, so a plugin's state
    /// belongs to its approved directory, not to a name any manifest can claim. The kv store
    /// is in `kv/` beneath it, the `fs.*` data directory in `data/` (see
    /// [`Engine::data_dir`]). Give a real path: a symlink in it refuses every load.
    pub state_dir: PathBuf,
    /// The Python SDK made importable inside every sandbox: a directory holding `plugbox/`.
    /// `None`: the SDK compiled into this binary, materialised once under
    /// [`crate::sdk::default_root`] ([`crate::sdk`]).
    pub sdk_dir: Option<PathBuf>,
    /// Deadline for a plugin's `hello`.
    pub handshake_timeout: Duration,
    /// Audit durability and rotation.
    pub audit: AuditOptions,
    /// Sign audit checkpoints with the secret key in this file (`plugbox audit keygen`;
    /// mode 0600, refused if group or others may read it). Loaded by [`Engine::new`] into
    /// [`AuditOptions::key`], which it replaces.
    pub audit_key: Option<PathBuf>,
    /// Most plugin processes (instances) alive at once; further starts are refused.
    pub max_plugins: usize,
    /// When the host is root: the first of `uid_count` uids (and gids) handed out one per
    /// live instance that runs under no identity its grant named, so that each plugin process
    /// has a uid of its own on the host. `None` runs them all as the policy's uid.
    pub uid_base: Option<u32>,
    /// Where the uids of `uid_base`'s range are locked host-wide, one file per uid held while
    /// an instance runs under it, so that two engines on one host never run two instances
    /// under one uid ([`DEFAULT_UID_LOCK_DIR`]). Every engine sharing a uid range must share
    /// this directory. `None`: ids are exclusive within this engine only.
    pub uid_lock_dir: Option<PathBuf>,
    /// How many ids, from `uid_base`, the pool may hand out ([`DEFAULT_UID_COUNT`]). Engines
    /// sharing the lock directory share the range, each taking the lowest free ids; how many
    /// instances this engine runs at once is bounded by `max_plugins`, not by this.
    pub uid_count: u32,
    /// Refuse a reload whose new version asks for more than the loaded one, unless it comes
    /// with grants other than those the plugin was loaded with.
    pub refuse_escalation: bool,
    /// What a manifest asking beyond its grant gets: refused (the default), or loaded with
    /// the excess dropped and the drop audited ([`CeilingMode::Clamp`]).
    pub ceiling: CeilingMode,
    /// The store of Python environments `plugbox install` builds (content-addressed): a
    /// plugin declaring `[python] requirements` or `wheels` runs in its environment there,
    /// read on the host's authority ([`crate::pyenv::store::default_root`]).
    pub env_store: PathBuf,
}

impl EngineConfig {
    /// Defaults: API 1.0.0, the SDK shipped in this source tree, a 10 s handshake.
    pub fn new(audit_log: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            api_version: semver::Version::new(1, 0, 0),
            audit_log: audit_log.into(),
            state_dir: state_dir.into(),
            sdk_dir: default_sdk_dir(),
            handshake_timeout: Duration::from_secs(10),
            audit: AuditOptions::default(),
            audit_key: None,
            max_plugins: 256,
            uid_base: Some(DEFAULT_UID_BASE),
            uid_lock_dir: Some(PathBuf::from(DEFAULT_UID_LOCK_DIR)),
            uid_count: DEFAULT_UID_COUNT,
            refuse_escalation: true,
            ceiling: CeilingMode::Refuse,
            env_store: crate::pyenv::store::default_root(),
        }
    }
}

/// Size of the default per-instance uid range, shared by every engine on the host.
pub const DEFAULT_UID_COUNT: u32 = 65_536;

/// First uid of the default per-instance range (far above distribution and container
/// ranges; every id in it is unused on this kind of host).
pub const DEFAULT_UID_BASE: u32 = 1_900_000_000;

/// The SDK directory the host chose: `PLUGBOX_SDK` if set; `None` means the SDK compiled
/// into this binary.
pub fn default_sdk_dir() -> Option<PathBuf> {
    std::env::var_os("PLUGBOX_SDK").map(PathBuf::from)
}

/// Where plugins of an engine with this `sdk_dir` find the SDK (no file is touched).
pub fn sdk_location(sdk_dir: Option<&Path>) -> PathBuf {
    match sdk_dir {
        Some(dir) => dir.to_owned(),
        None => crate::sdk::default_root().join(crate::sdk::dir_name()),
    }
}

/// Why the engine could not start or register something.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A capability name is taken or malformed.
    #[error("engine: capability {0:?} is already registered or not a valid name")]
    Capability(String),
    /// The host-death watchdog cannot be started (without it, a host killed with SIGKILL
    /// would leave plugin subprocesses behind).
    #[error("engine: lifetime: cannot start the host-death watchdog: {0}")]
    Watchdog(std::io::Error),
    /// The host-wide uid lock directory cannot be used.
    #[error(transparent)]
    UidLocks(#[from] UidLockError),
    /// The SDK cannot be materialised, or the materialised copy was changed.
    #[error(transparent)]
    Sdk(#[from] crate::sdk::SdkError),
    /// The state directory cannot be created.
    #[error("engine: state directory {path}: {source}")]
    State {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Runs plugins. Cheap to clone; every clone is the same engine.
///
/// End it with [`Engine::shutdown`]: plugins are drained and stopped in order, their exit
/// records written, then the audit log is sealed. Dropping the last clone without it kills
/// every plugin process group at once (SIGKILL) and seals the log when the last holder of the
/// log lets go: the engine itself, or the tasks still writing the killed instances' exit
/// records (they finish on the runtime, or are dropped with it). The seal is written in the
/// thread that drops that last holder, before the drop returns (one record and an fsync, as
/// any record costs under [`Durability::Fsync`](crate::audit::Durability::Fsync)); never
/// later on a background thread, so a host that drops its engine and runtime and then exits
/// leaves a sealed log. A process that exits without dropping them (or is killed) leaves it
/// unsealed, which `plugbox audit verify` reports.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    /// The SDK directory every plugin imports `plugbox` from (resolved at start).
    pub(crate) sdk: PathBuf,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) capabilities: RwLock<HashMap<String, Arc<dyn Capability>>>,
    pub(crate) next_instance: AtomicU64,
    pub(crate) live: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) registry: registry::Registry,
    pub(crate) uids: Option<Arc<uids::UidPool>>,
    /// Live instances per uid that is not from the pool (System V IPC cleanup waits for the
    /// last of them).
    pub(crate) shared_uids: Arc<uids::SharedUids>,
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// Kills every registered plugin process group if this host dies.
    pub(crate) watchdog: Arc<crate::sandbox::Watchdog>,
    /// The plugins' events ([`Engine::events`]), fed by the audit writer.
    pub(crate) events: tokio::sync::broadcast::Sender<events::PluginEvent>,
}

impl Drop for Inner {
    /// The last handle on the engine is gone: no plugin process may outlive it.
    fn drop(&mut self) {
        let registry = std::mem::take(self.registry.get_mut().unwrap_or_else(|p| p.into_inner()));
        for m in registry.into_values() {
            m.set_state(State::Stopped, Some("the engine was dropped"));
            let _ = m.wake.send(plugin::Wake::Stop);
            for instance in m.take_all() {
                instance.retire();
                let _ = instance.tree().signal(libc::SIGKILL);
                instance.kill("the engine was dropped");
            }
        }
    }
}

impl Engine {
    /// Opens the audit log and registers the built-in capabilities.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        // First, while the host is small: the watchdog is a copy-on-write fork of it.
        let watchdog = crate::sandbox::Watchdog::start(config.max_plugins.max(1))
            .map_err(EngineError::Watchdog)?;
        std::fs::create_dir_all(&config.state_dir).map_err(|source| EngineError::State {
            path: config.state_dir.clone(),
            source,
        })?;
        let mut options = config.audit.clone();
        if let Some(key) = &config.audit_key {
            let key = crate::audit::AuditKey::load(key).map_err(AuditError::from)?;
            options.key = Some(Arc::new(key));
        }
        let (events, _) = tokio::sync::broadcast::channel(events::EVENT_BACKLOG);
        options.on_record = Some(events::hook(events.clone(), options.on_record.take()));
        let audit = AuditLog::open_with(&config.audit_log, options)?;
        // Each live plugin holds a few descriptors (channel, pidfd, output pipes).
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let uids = match config.uid_base.filter(|_| crate::sys::geteuid() == 0) {
            None => None,
            Some(base) => {
                let locks = match &config.uid_lock_dir {
                    Some(dir) => Some(uid_locks::UidLocks::open(dir)?),
                    None => None,
                };
                Some(uids::UidPool::new(base, config.uid_count, locks))
            }
        };
        let sdk = match &config.sdk_dir {
            Some(dir) => {
                crate::sdk::check_package(dir)?;
                precompile_sdk(dir);
                dir.clone()
            }
            None => crate::sdk::materialise(&crate::sdk::default_root())?,
        };
        let mut caps: HashMap<String, Arc<dyn Capability>> = HashMap::new();
        caps.insert("log".into(), Arc::new(Log));
        caps.insert("fs.read".into(), Arc::new(Fs(FsOp::Read)));
        caps.insert("fs.write".into(), Arc::new(Fs(FsOp::Write)));
        caps.insert("fs.list".into(), Arc::new(Fs(FsOp::List)));
        // One set of kv stores (and key indexes) for the four operations of this engine.
        let stores = Arc::new(KvStores::default());
        for (name, op) in [
            ("kv.get", KvOp::Get),
            ("kv.set", KvOp::Set),
            ("kv.delete", KvOp::Delete),
            ("kv.list", KvOp::List),
        ] {
            caps.insert(name.into(), Arc::new(Kv::new(op, Arc::clone(&stores))));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                sdk,
                audit,
                capabilities: RwLock::new(caps),
                next_instance: AtomicU64::new(1),
                live: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                registry: Default::default(),
                uids,
                shared_uids: Default::default(),
                closing: Default::default(),
                watchdog: Arc::new(watchdog),
                events,
            }),
        })
    }

    /// Registers a host capability under an exact name (`[a-z0-9._-]{1,64}`).
    pub fn register(&self, name: &str, capability: Arc<dyn Capability>) -> Result<(), EngineError> {
        let valid = !name.is_empty()
            && name.len() <= crate::manifest::MAX_NAME_CHARS
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        let mut caps = self
            .inner
            .capabilities
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if !valid || caps.contains_key(name) {
            return Err(EngineError::Capability(name.to_owned()));
        }
        caps.insert(name.to_owned(), capability);
        Ok(())
    }

    /// Plugin processes alive now.
    pub fn live_plugins(&self) -> usize {
        self.inner.live.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The audit log every plugin of this engine writes to.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// Default payload limit of a capability without `max_bytes`.
    pub fn default_max_bytes() -> u64 {
        u64::from(MAX_FRAME_BYTES)
    }
}

/// The sandbox cannot write bytecode, so without a `__pycache__` every plugin start would
/// recompile the SDK (measured: about 22 ms). Compile it once, when missing or stale.
fn precompile_sdk(sdk_dir: &Path) {
    let package = sdk_dir.join("plugbox");
    let newest_source = std::fs::read_dir(&package)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "py"))
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max();
    let cache = std::fs::metadata(package.join("__pycache__"))
        .and_then(|m| m.modified())
        .ok();
    if matches!((newest_source, cache), (Some(src), Some(pyc)) if pyc >= src) {
        return;
    }
    let status = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "compileall", "-q"])
        .arg(&package)
        .stdout(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        tracing::warn!(sdk = %package.display(), "could not precompile the SDK; plugins will start slower");
    }
}
