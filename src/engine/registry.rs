//! The engine's loaded plugins by name: load (atomic, idempotent), reload (atomic, rolls
//! back), unload (drain, then stop), and shutdown of everything.

use super::drain::{drain, Stop};
use super::instance::Instance;
use super::lifecycle::{record_transition, State};
use super::plugin::{Managed, Plugin, PluginStats, Wake};
use super::validate::Validated;
use super::{supervisor, Engine, LoadError};
use crate::manifest::Grants;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Loaded plugins by manifest name.
pub(crate) type Registry = std::sync::Mutex<HashMap<String, Arc<Managed>>>;

impl Engine {
    /// Loads the plugin in `dir` under `grants` and keeps it running: `min_warm` instances are
    /// spawned, handshaken and probed, then supervised (health pings, restarts).
    ///
    /// Atomic: if any step fails, every process started for it is killed, nothing stays
    /// registered, and the error names the step ([`LoadError::step`]). Idempotent: loading a
    /// plugin that is already loaded from the same code with the same grants returns the
    /// live handle; different code or grants is [`LoadError::Conflict`] (use
    /// [`Engine::reload`]).
    pub async fn load(&self, dir: &Path, grants: &Grants) -> Result<Plugin, LoadError> {
        if self
            .inner
            .closing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(LoadError::ShuttingDown);
        }
        let validated = self.validate(dir, grants)?;
        let name = validated.manifest.name.clone();
        let identity = Identity {
            digest: validated.digest.clone(),
            grants: validated.grants.clone(),
            dir: validated.manifest.dir.clone(),
        };
        let registered = {
            let mut registry = self.registry();
            match registry.get(&name) {
                Some(live) => Err(Arc::clone(live)),
                None => {
                    let (m, rx) = Managed::new(validated, Arc::clone(&self.inner.audit));
                    registry.insert(name.clone(), Arc::clone(&m));
                    Ok((m, rx))
                }
            }
        };
        let (m, rx) = match registered {
            Ok(new) => new,
            Err(live) => return join_existing(live, &name, identity).await,
        };
        let subject = m.subject();
        let audit = &self.inner.audit;
        let recorded =
            record_transition(audit, &subject, None, State::Discovered, None).and_then(|()| {
                let from = Some(State::Discovered);
                record_transition(audit, &subject, from, State::Validated, None)
            });
        let activated = match recorded {
            Ok(()) => self.start_warm(&m.validated(), &m).await,
            Err(e) => Err(e.into()),
        };
        match activated {
            Ok(instances) => {
                for instance in instances {
                    supervisor::watch(&m, Arc::clone(&instance));
                    m.add(instance);
                }
                m.set_state(State::Ready, None);
                tokio::spawn(supervisor::run(
                    super::launcher::Launcher::new(self),
                    Arc::clone(&m),
                    rx,
                ));
                Ok(Plugin { m })
            }
            Err(e) => {
                self.registry().remove(&name);
                m.set_state(
                    State::Failed,
                    Some(&format!("activation failed at {}: {e}", e.step())),
                );
                Err(e)
            }
        }
    }

    /// Starts `min_warm` instances of `validated` in parallel; all or none.
    async fn start_warm(
        &self,
        validated: &Validated,
        m: &Managed,
    ) -> Result<Vec<Arc<Instance>>, LoadError> {
        let count = validated.manifest.policy.process().min_warm as usize;
        let starts = (0..count).map(|_| self.start_instance(validated, Arc::clone(&m.stats)));
        let results = join_all(starts).await;
        let mut ok = Vec::with_capacity(count);
        let mut first_error = None;
        for result in results {
            match result {
                Ok(instance) => ok.push(Arc::new(instance)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(ok),
            Some(e) => {
                // Dropping an instance kills its tree; wait so nothing outlives the error.
                for instance in &ok {
                    instance.retire();
                    instance.kill("activation failed");
                }
                for instance in ok {
                    instance.wait().await;
                }
                Err(e)
            }
        }
    }

    /// Replaces the code of loaded plugin `name` with the one in `dir`: the new instances
    /// start (and are probed) first; only then do calls switch to them and the old ones
    /// drain. If the new version fails at any step, the old one keeps serving.
    ///
    /// With [`EngineConfig::refuse_escalation`](super::EngineConfig::refuse_escalation) (the
    /// default), a new version that asks for more than the loaded one (capabilities, scopes,
    /// paths, ports, process rights, limits: what `plugbox diff` lists) is refused unless
    /// `grants` differs from the grants it was loaded with: escalation needs a new grant.
    pub async fn reload(
        &self,
        name: &str,
        dir: &Path,
        grants: &Grants,
    ) -> Result<Plugin, LoadError> {
        let Some(m) = self.registry().get(name).cloned() else {
            return Err(LoadError::Host(format!("{name} is not loaded")));
        };
        let validated = self.validate(dir, grants)?;
        if validated.manifest.name != name {
            return Err(LoadError::Host(format!(
                "{} holds plugin {}, not {name}",
                dir.display(),
                validated.manifest.name
            )));
        }
        let old_version = m.validated();
        if self.inner.config.refuse_escalation && validated.grants == old_version.grants {
            let changes: Vec<String> =
                crate::manifest::diff::diff(&old_version.manifest, &validated.manifest)
                    .into_iter()
                    .filter(|c| c.kind == "escalates")
                    .map(|c| format!("{}: {}", c.field, c.detail))
                    .collect();
            if !changes.is_empty() {
                let e = LoadError::Escalates {
                    name: name.to_owned(),
                    version: validated.manifest.version.to_string(),
                    changes,
                };
                return Err(self.refused(&validated.subject, e));
            }
        }
        let fresh = self.start_warm(&validated, &m).await?;
        *m.validated.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(validated);
        for instance in &fresh {
            supervisor::watch(&m, Arc::clone(instance));
        }
        let old = m.replace_all(fresh);
        m.close_circuit();
        let _ = m.wake.send(Wake::Reloaded);
        let reason = format!(
            "reloaded from version {} (digest {})",
            old_version.manifest.version, old_version.digest
        );
        m.restate(State::Ready, &reason);
        let why = format!("replaced by version {}", m.validated().manifest.version);
        tokio::spawn(drain(Arc::clone(&m), old, Stop::Reload, why));
        Ok(Plugin { m })
    }

    /// Unloads plugin `name`: no new calls (they fail with `unavailable`), calls in flight
    /// finish (each within its own call timeout), then every instance gets `shutdown`,
    /// SIGTERM and SIGKILL in turn. Returns false if it was not loaded.
    pub async fn unload(&self, name: &str) -> bool {
        let Some(m) = self.registry().remove(name) else {
            return false;
        };
        m.set_state(State::Draining, None);
        let _ = m.wake.send(Wake::Stop);
        let why = "the plugin is unloaded".to_owned();
        drain(Arc::clone(&m), m.take_all(), Stop::Unload, why).await;
        m.set_state(State::Stopped, None);
        true
    }

    /// The loaded plugin `name`, if any.
    pub fn plugin(&self, name: &str) -> Option<Plugin> {
        self.registry()
            .get(name)
            .map(|m| Plugin { m: Arc::clone(m) })
    }

    /// Every loaded plugin's counters and state, by name.
    pub fn plugins(&self) -> Vec<PluginStats> {
        let mut all: Vec<PluginStats> = self.registry().values().map(|m| m.snapshot()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Unloads every plugin (in parallel), refuses further loads, waits (up to the handshake
    /// timeout plus the shutdown graces) for instances still starting to be gone too, so
    /// that their records precede the seal, and seals the audit log.
    pub async fn shutdown(&self) -> Result<(), crate::audit::AuditError> {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        let names: Vec<String> = self.registry().keys().cloned().collect();
        join_all(names.iter().map(|n| self.unload(n))).await;
        let limit = self.inner.config.handshake_timeout
            + super::instance::SHUTDOWN_GRACE
            + super::instance::TERM_GRACE;
        let settled = async {
            while self.live_plugins() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(limit, settled).await.is_err() {
            tracing::warn!(
                live = self.live_plugins(),
                "sealing the audit log with unmanaged instances still running"
            );
        }
        self.inner.audit.seal().map(|_| ())
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Managed>>> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// What makes two loads of one name the same load.
struct Identity {
    digest: String,
    grants: Grants,
    dir: std::path::PathBuf,
}

/// The second load of a loaded name: the same handle, once its activation settles.
async fn join_existing(
    live: Arc<Managed>,
    name: &str,
    asked: Identity,
) -> Result<Plugin, LoadError> {
    let loaded = live.validated();
    if loaded.digest != asked.digest
        || loaded.grants != asked.grants
        || loaded.manifest.dir != asked.dir
    {
        return Err(LoadError::Conflict {
            name: name.to_owned(),
            loaded: format!(
                "version {} from {} (digest {})",
                loaded.manifest.version,
                loaded.manifest.dir.display(),
                loaded.digest
            ),
        });
    }
    match live
        .wait_for(&[State::Ready, State::Degraded, State::Failed, State::Stopped])
        .await
    {
        State::Ready | State::Degraded => Ok(Plugin { m: live }),
        other => Err(LoadError::Host(format!(
            "{name} is {other}; load it again once it is unloaded"
        ))),
    }
}
