//! Applying the host's ceiling at activation: the manifest's sandbox sections become
//! requested ∩ granted before anything is prepared, and every value the grant lowered or
//! request it dropped is audited (a `limit` record with rule `grant.ceiling`).

use super::{Engine, LoadError};
use crate::audit::{EventKind, Record, Subject};
use crate::manifest::{Grants, Manifest};

impl Engine {
    /// Constrains `manifest.policy` to `grants` under the engine's
    /// [`CeilingMode`](crate::manifest::CeilingMode). A refusal is returned unaudited (the
    /// caller audits it as `load_refused`); what the grant changed is audited here.
    pub(crate) fn apply_ceiling(
        &self,
        manifest: &mut Manifest,
        grants: &Grants,
        subject: &Subject,
    ) -> Result<(), LoadError> {
        let ceiling = manifest.constrain(grants, self.inner.config.ceiling)?;
        if ceiling.stricter.is_empty() && ceiling.excess.is_empty() {
            return Ok(());
        }
        let mut r = Record::new(EventKind::Limit, subject.clone());
        r.decision = Some("allow");
        r.rule = Some("grant.ceiling");
        r.reason = Some(format!(
            "the grant made {} value(s) stricter and dropped {} request(s)",
            ceiling.stricter.len(),
            ceiling.excess.len()
        ));
        r.detail = Some(ceiling.audit_detail());
        self.inner.audit.write(&r)?;
        Ok(())
    }
}
