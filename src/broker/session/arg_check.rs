//! A host→plugin call's arguments checked against the command's schema before anything is
//! sent: a mismatch is refused with `invalid_argument`, counted, and recorded.

use super::Session;
use crate::audit::EventKind;
use crate::capability::CallError;
use crate::ipc::ErrorCode;
use serde_json::{Map, Value};

/// The rule that refuses a call whose arguments do not match, as named in records.
pub const ARG_SCHEMA_RULE: &str = "arg_schema";

impl Session {
    /// `Ok` if `command` has no schema or `args` (and the body argument `body`) match it;
    /// otherwise the `invalid_argument` error, after its `invoke` record (outcome
    /// `invalid_argument`, decision `deny`, rule `arg_schema`, no call id: nothing was sent).
    pub(super) fn check_arguments(
        &self,
        command: &str,
        args: &Map<String, Value>,
        body: Option<&str>,
    ) -> Result<(), CallError> {
        let Some(schema) = self.schemas.get(command) else {
            return Ok(());
        };
        let Err(mismatch) = schema.check(args, body) else {
            return Ok(());
        };
        let error = CallError::new(ErrorCode::InvalidArgument, mismatch.to_string());
        self.stats.invoked(
            command,
            Some(ErrorCode::InvalidArgument),
            std::time::Duration::ZERO,
        );
        let mut r = self.record(EventKind::Invoke);
        r.capability = Some(command.to_owned());
        r.decision = Some("deny");
        r.rule = Some(ARG_SCHEMA_RULE);
        r.outcome = Some(ErrorCode::InvalidArgument.as_str().into());
        r.reason = Some(crate::audit::escape_text(&error.message));
        let header = serde_json::to_vec(args).unwrap_or_default();
        r.args_sha256 = Some(super::digest(&header, &[]));
        if !self.write_audit(&r) {
            return Err(CallError::host("audit log unavailable"));
        }
        Err(error)
    }
}
