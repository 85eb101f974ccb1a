//! `plugbox exec`: one command under a policy file, to completion.
//!
//! A command that is a virtual environment's interpreter (`/venv/bin/python`, found as
//! CPython finds it: `pyvenv.cfg` beside the path as given or one directory up) runs through
//! that path, so the environment works; the sandbox is granted read on the environment and
//! on its base installation's standard library, never write, and the enforcement report
//! names the environment.

use super::fail;
use plugbox::launcher;
use plugbox::policy::Policy;
use plugbox::pyenv::Venv;
use plugbox::sandbox::command::ResolvedCommand;
use plugbox::sandbox::{Environment, Prepared};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) fn exec(
    policy: PathBuf,
    report_json: Option<PathBuf>,
    env: Vec<String>,
    mut argv: Vec<OsString>,
) -> ExitCode {
    let policy = match Policy::load(&policy) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let mut environment = Environment::clean();
    for pair in &env {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => environment.set(k.as_ref(), v.as_ref()),
            _ => return fail(&format!("cli: --env {pair:?}: expected KEY=VALUE")),
        }
    }
    let program = argv.remove(0);
    let search = std::env::var_os("PATH");
    let command = match ResolvedCommand::resolve(&program, search.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let (policy, venv) = match with_venv(policy, &command) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    // Resolved once: the environment is looked for beside the very file that is prepared.
    let prepared = match Prepared::for_command(policy, command) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    if let Some(path) = report_json {
        let mut report = prepared.report(environment.names());
        report.python_environment = venv.map(|v| v.report("interpreter"));
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text + "\n") {
            return fail(&format!("report: cannot write {}: {e}", path.display()));
        }
    }
    match launcher::run(&prepared, argv, environment) {
        Ok(outcome) => ExitCode::from(outcome.exit_code().clamp(0, 255) as u8),
        Err(e) => fail(&e),
    }
}

/// The virtual environment `command` is the interpreter of, if any, and `policy` with read
/// granted on it and its base standard library.
fn with_venv(policy: Policy, command: &ResolvedCommand) -> Result<(Policy, Option<Venv>), String> {
    match Venv::of_interpreter(command.path()).map_err(|e| e.to_string())? {
        Some(venv) => Ok((policy.with_read_paths(venv.read_paths()), Some(venv))),
        None => Ok((policy, None)),
    }
}
