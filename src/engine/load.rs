//! Starting one plugin instance: validation once (manifest, grants, digest, sandbox
//! preparation), then per instance: spawn, handshake, first health probe. Atomic: on any
//! failure the process tree is killed, a `load_refused` record names the step, and nothing
//! stays running.

use super::evidence;
use super::instance::Instance;
use super::lifecycle::{record_transition, State};
use super::start::{self as steps, Hello};
use super::uids::UidLease;
use super::validate::Validated;
use super::{teardown, Engine, LoadError};
use crate::audit::Subject;
use crate::broker::stats::Stats;
use crate::manifest::Grants;
use crate::sandbox::tree::Tree;
use crate::sys;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Where interpreters named by `plugin.runtime` are looked up (never the host's `PATH`).
pub const RUNTIME_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

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
        let started = record_transition(&self.inner.audit, &subject, None, State::Spawning, None)
            .map_err(LoadError::from);
        let result = match started {
            Ok(()) => self.start(validated, subject.clone(), stats).await,
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

    /// The uid an instance of `validated` runs as: one of the pool's, or the policy's shared
    /// by every instance that keeps it.
    pub(crate) fn lease_for(&self, validated: &Validated) -> Result<Option<UidLease>, LoadError> {
        if !self.uses_pool(&validated.prepared) {
            return Ok(Some(
                self.inner.shared_uids.hold(validated.prepared.ids().0),
            ));
        }
        let Some(pool) = self.inner.uids.as_ref() else {
            return Ok(None);
        };
        match pool.acquire() {
            Ok(Some(lease)) => Ok(Some(lease)),
            Ok(None) => Err(LoadError::Host(
                "no free uid left in the engine's uid pool (others are held by instances of \
                 this or another engine on the host)"
                    .into(),
            )),
            Err(e) => Err(LoadError::Host(e.to_string())),
        }
    }

    /// Starts one instance, in order: the steps of [`super::start`], then teardown takes
    /// over the tree, the first health probe, and `handshaking → ready`.
    async fn start(
        &self,
        v: &Validated,
        subject: Subject,
        stats: Arc<Stats>,
    ) -> Result<Instance, LoadError> {
        let inner = &*self.inner;
        let info = steps::plugin_info(v, &subject)?;
        let mut spawned = steps::spawn(self, v, &info).await?;
        let (tree, lease) = (spawned.tree, spawned.lease.take());
        let pid = tree.pid();
        let guard = steps::watch_tree(inner, tree)?;
        steps::record_spawn(inner, v, &subject, &spawned)?;
        let (tail, forwarders) = steps::forward_output(inner, v, &info, &mut spawned);
        let (mut reader, mut write_half) = steps::split(spawned.channel)?;
        let commands =
            match steps::handshake(inner, v, &subject, &mut reader, &mut write_half).await? {
                Hello::Accepted(commands, schemas) => (commands, schemas),
                Hello::Refused(e, let_it_exit) => {
                    let reap = move || guard.reap();
                    return Err(evidence::before_hello(e, pid, reap, &tail, let_it_exit).await);
                }
            };
        let session = steps::open_session(inner, v, &info, commands, stats, (reader, write_half));
        let limits = v.manifest.policy.limits();
        let exit = teardown::start(
            Arc::clone(&session),
            Arc::clone(&inner.audit),
            tree,
            limits.wall_seconds,
            Arc::clone(&inner.live),
            lease,
            Arc::clone(&inner.watchdog),
            forwarders,
            spawned.zygote,
        )
        .map_err(|e| LoadError::Host(format!("pidfd: {e}")))?;
        // From here the teardown task owns the process tree: dropping the instance kills it.
        std::mem::forget(guard);
        let instance = Instance::new(session, info, tree, exit);
        let timeout = v.manifest.policy.supervision().health_timeout;
        if let Err(e) = instance.ping(timeout).await {
            let e = LoadError::Health(e.message);
            let e = evidence::after_hello(e, instance, &tail).await;
            // Its teardown gave its slot back; `start_instance` gives it back again on error.
            inner.live.fetch_add(1, Ordering::AcqRel);
            return Err(e);
        }
        record_transition(
            &inner.audit,
            &subject,
            Some(State::Handshaking),
            State::Ready,
            None,
        )?;
        Ok(instance)
    }
}

/// Kills the process tree if loading stops half way (then the watchdog forgets its group).
pub(super) struct KillOnDrop(
    pub(super) Option<Tree>,
    pub(super) Arc<crate::sandbox::Watchdog>,
);

impl KillOnDrop {
    /// Kills the tree now (blocking: run it off the runtime), returns the status of its first
    /// process if reaped here, and forgets the group in the watchdog.
    pub(super) fn reap(mut self) -> Option<sys::WaitStatus> {
        self.kill()
    }

    fn kill(&mut self) -> Option<sys::WaitStatus> {
        let tree = self.0.take()?; // taken: nothing left to kill on drop
        let status = tree.kill().ok().flatten();
        if tree.is_group() {
            let _ = self.1.unregister(tree.pid());
        }
        status
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
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
