//! The checks that run no plugin code, once per activation: manifest, code digest and its pin,
//! API version and grants, capabilities this host provides, and the sandbox preparation
//! (Landlock ruleset, seccomp program, reachability for the uid the plugin will run as).
//! Every refusal is audited (`load_refused`, naming the step).

use super::python_env::PythonEnv;
use super::{Engine, LoadError, RUNTIME_PATH};
use crate::audit::{escape_text, EventKind, Record, Subject};
use crate::broker::gate::{CallLimits, Gate, Granted};
use crate::capability::fs::PluginFs;
use crate::manifest::{Grants, Manifest, ManifestError};
use crate::sandbox::command::check_dir_reachable;
use crate::sandbox::Prepared;
use crate::sys;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A plugin that passed every check that needs no process. Every instance of it, restarts
/// included, starts from this: the sandbox is prepared once per activation, not per spawn.
pub(crate) struct Validated {
    pub(crate) manifest: Manifest,
    pub(crate) grants: Grants,
    pub(crate) digest: String,
    /// The plugin's subject (instance `-`).
    pub(crate) subject: Subject,
    pub(crate) prepared: Prepared,
    pub(crate) sdk: PathBuf,
    /// The allow-list, rate and in-flight limits, shared by every instance.
    pub(crate) gate: Arc<Gate>,
    /// The plugin's data directory, made and opened once here and never by path again, with
    /// the activation's `fs.*` slots and quota; shared by every instance.
    pub(crate) fs: Arc<PluginFs>,
    /// The Python environment it runs in (`None`: the runtime alone, `-I -S`).
    pub(crate) python_env: Option<PythonEnv>,
    /// Its zygote, when its policy has one.
    pub(crate) zygote: Option<super::zygote::Zygote>,
}

impl Engine {
    /// Every check that runs no plugin code, and the sandbox preparation. A refusal is
    /// audited (`load_refused`, naming the step).
    pub(crate) fn validate(&self, dir: &Path, grants: &Grants) -> Result<Validated, LoadError> {
        let mut manifest = match Manifest::load(dir) {
            Ok(m) => m,
            Err(e) => return Err(self.refused(&unknown_subject(dir), e.into())),
        };
        let digest = match crate::manifest::digest::code_digest(&manifest.dir) {
            Ok(d) => d,
            Err(e) => {
                let subject = unknown_subject(dir);
                return Err(self.refused(&subject, ManifestError::from(e).into()));
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
        if let Err(e) = self.apply_ceiling(&mut manifest, grants, &subject) {
            return Err(self.refused(&subject, e));
        }
        let env_store = &self.inner.config.env_store;
        let python_env = match super::python_env::for_load(&manifest, grants, env_store) {
            Ok(env) => env,
            Err(e) => return Err(self.refused(&subject, e.into())),
        };
        let gate = match self.gate_for(&manifest, grants) {
            Ok(gate) => Arc::new(gate),
            Err(e) => return Err(self.refused(&subject, e)),
        };
        let (prepared, sdk) = match self.prepare(&manifest, python_env.as_ref()) {
            Ok(p) => p,
            Err(e) => return Err(self.refused(&subject, e)),
        };
        let mut protected = vec![
            ("the plugin directory", &*manifest.dir),
            ("the SDK directory", &*sdk),
        ];
        if let Some(env) = &python_env {
            protected.push(("the Python environment", &env.venv.root));
        }
        let fs = match open_fs(&self.inner.config.state_dir, &manifest, grants, &protected) {
            Ok(fs) => Arc::new(fs),
            Err(e) => return Err(self.refused(&subject, e)),
        };
        let prepared_zygote = prepared
            .template_plan()
            .map(|_| super::zygote::Zygote::default());
        Ok(Validated {
            manifest,
            grants: grants.clone(),
            digest,
            subject,
            prepared,
            sdk,
            gate,
            fs,
            python_env,
            zygote: prepared_zygote,
        })
    }

    /// Builds the Landlock ruleset and seccomp program, and checks that the uid the plugin
    /// will run as can reach its directory, the SDK and its Python environment.
    fn prepare(
        &self,
        manifest: &Manifest,
        env: Option<&PythonEnv>,
    ) -> Result<(Prepared, PathBuf), LoadError> {
        let sdk = self
            .inner
            .sdk
            .canonicalize()
            .map_err(|e| LoadError::Host(format!("SDK {}: {e}", self.inner.sdk.display())))?;
        let env_read = env.map(PythonEnv::read_paths).unwrap_or_default();
        let policy = manifest
            .policy
            .clone()
            .with_read_paths([manifest.dir.clone(), sdk.clone()])
            .with_read_paths(env_read);
        // An environment's interpreter runs through its path, so it finds `pyvenv.cfg`.
        let program = env.map_or(manifest.runtime.as_ref(), |e| e.interpreter().as_os_str());
        let prepared = Prepared::new(policy, program, Some(RUNTIME_PATH.as_ref()))?;
        if sys::geteuid() == 0 {
            let (uid, gid) = match (self.uses_pool(&prepared), &self.inner.uids) {
                (true, Some(pool)) => (pool.first(), pool.first()),
                _ => prepared.ids(),
            };
            check_dir_reachable(&manifest.dir, uid, gid)?;
            check_dir_reachable(&sdk, uid, gid)?;
            if let Some(env) = env {
                check_dir_reachable(&env.venv.root, uid, gid)?;
            }
        }
        Ok((prepared, sdk))
    }

    /// Does an instance of `prepared` take its uid from the engine's pool? Only when the host
    /// is root and the policy keeps the default identity (65534); an explicit one is kept.
    pub(crate) fn uses_pool(&self, prepared: &Prepared) -> bool {
        self.inner.uids.is_some() && sys::geteuid() == 0 && prepared.ids() == (65534, 65534)
    }

    /// Audits a refusal (`load_refused`, naming the step) and returns the error.
    pub(crate) fn refused(&self, subject: &Subject, error: LoadError) -> LoadError {
        let mut r = Record::new(EventKind::LoadRefused, subject.clone());
        r.decision = Some("deny");
        r.reason = Some(escape_text(&error.summary()));
        r.detail = Some(error.audit_detail());
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
            CallLimits {
                rate: l.calls_per_second,
                burst: l.call_burst,
                in_flight: l.calls_in_flight,
                pending_reply_bytes: l.pending_reply_bytes,
            },
        ))
    }
}

/// Refuses a `[filesystem] write` that reaches the plugin's code or the SDK, then makes and
/// opens the plugin's data directory and its `fs.*` roots and counts the bytes beneath the
/// roots of its `fs.write` grant, for the quota.
fn open_fs(
    state_dir: &Path,
    manifest: &Manifest,
    grants: &Grants,
    protected: &[(&'static str, &Path)],
) -> Result<PluginFs, LoadError> {
    let write = &manifest.policy.filesystem().write;
    super::code_guard::refuse_writable_code(write, protected)?;
    let fs_caps: Vec<_> = manifest
        .effective(grants)?
        .into_iter()
        .filter(|cap| ["fs.read", "fs.write", "fs.list"].contains(&cap.name.as_str()))
        .collect();
    let roots: Vec<String> = fs_caps.iter().flat_map(|c| c.paths.clone()).collect();
    let write_roots: Vec<String> = fs_caps
        .into_iter()
        .filter(|cap| cap.name == "fs.write")
        .flat_map(|cap| cap.paths)
        .collect();
    let key = super::load::state_key(manifest);
    Ok(PluginFs::open(
        state_dir,
        &key,
        &roots,
        &write_roots,
        manifest.policy.limits(),
    )?)
}

fn unknown_subject(dir: &Path) -> Subject {
    Subject {
        name: escape_text(&dir.display().to_string()),
        version: "unknown".into(),
        instance: "-".into(),
        digest: None,
    }
}
