//! The audit log and state directory of `run` and `serve`: the ones given, or the documented
//! defaults ([`plugbox::default_paths`]); says on stderr where the log is.

use std::path::PathBuf;

/// `(audit log, state directory)`, defaults created private where needed.
pub fn resolve(
    audit: Option<PathBuf>,
    state: Option<PathBuf>,
) -> Result<(PathBuf, PathBuf), String> {
    let audit = plugbox::default_paths::audit_log(audit).map_err(|e| e.to_string())?;
    let state = plugbox::default_paths::state_dir(state).map_err(|e| e.to_string())?;
    eprintln!(
        "plugbox: audit log: {}",
        plugbox::display::escape(&audit.display().to_string())
    );
    Ok((audit, state))
}
