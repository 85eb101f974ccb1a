//! How a supervisor starts instances of its plugin: a narrow handle the registry gives it at
//! load, so the supervisor never holds the engine or calls back up into it (or into the
//! registry). The handle is weak: a supervisor outliving its engine starts nothing.

use super::instance::Instance;
use super::plugin::Managed;
use super::validate::Validated;
use super::{Engine, Inner, LoadError};
use crate::manifest::{digest::code_digest, ManifestError};
use std::future::Future;
use std::sync::{Arc, Weak};

/// Starts instances of one plugin.
pub(crate) struct Launcher {
    engine: Weak<Inner>,
}

impl Launcher {
    /// A launcher on `engine` that does not keep it alive.
    pub(crate) fn new(engine: &Engine) -> Self {
        Self {
            engine: Arc::downgrade(&engine.inner),
        }
    }

    /// The start of one instance of `m`'s code, once it is checked unchanged since it was
    /// validated (and approved) at load; `None` once the engine is gone.
    pub(crate) fn start(
        &self,
        m: &Arc<Managed>,
    ) -> Option<impl Future<Output = Result<Instance, LoadError>> + Send + 'static> {
        let engine = Engine {
            inner: self.engine.upgrade()?,
        };
        let m = Arc::clone(m);
        Some(async move {
            let validated = m.validated();
            match unchanged_code(&validated) {
                Ok(()) => {
                    engine
                        .start_instance(&validated, Arc::clone(&m.stats))
                        .await
                }
                Err(e) => Err(engine.refused(&validated.subject, e)),
            }
        })
    }
}

/// The plugin's code is still what was validated: its digest, computed again.
fn unchanged_code(validated: &Validated) -> Result<(), LoadError> {
    let dir = &validated.manifest.dir;
    let now = code_digest(dir).map_err(ManifestError::from)?;
    if now == validated.digest {
        return Ok(());
    }
    Err(ManifestError::DigestMismatch {
        plugin: validated.manifest.name.clone(),
        approved: validated.digest.clone(),
        actual: now,
    }
    .into())
}
