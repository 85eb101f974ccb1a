//! Spawning a template: the sandbox's usual spawn with the template's seccomp program, the
//! SDK's zygote entry point, and its output forwarded and its spawn recorded as the plugin's
//! `#zygote` instance.

use crate::audit::Subject;
use crate::engine::output::Forwarders;
use crate::engine::validate::Validated;
use crate::engine::Inner;
use crate::sandbox::{spawn_template, Sandboxed, SpawnRequest};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

/// The instance name the template's records carry.
pub(super) fn subject(v: &Validated) -> Subject {
    Subject {
        instance: format!("{}#zygote", v.manifest.name),
        ..v.subject.clone()
    }
}

/// Spawns the template of `v` holding `control`, and records its spawn.
pub(super) fn template(
    inner: &Inner,
    v: &Validated,
    control: &OwnedFd,
    ids: Option<(u32, u32)>,
) -> Result<Sandboxed, String> {
    let env = crate::engine::start::plugbox_env(v, "PLUGBOX_ZYGOTE_FD", control.as_raw_fd());
    let bootstrap = crate::engine::start::bootstrap(v, "_zygote", "z");
    let env_names = env.names();
    let request = SpawnRequest {
        args: crate::engine::python_env::interpreter_args(v.python_env.as_ref(), bootstrap),
        env,
        stdin: Stdio::null(),
        stdout: Stdio::piped(),
        stderr: Stdio::piped(),
        keep_fd: Some(control.as_raw_fd()),
        ids,
    };
    let child = spawn_template(&v.prepared, request).map_err(|e| e.to_string())?;
    let instructions = v
        .prepared
        .template_plan()
        .map_or(0, |plan| plan.seccomp.len());
    let mut r = crate::engine::start::spawn_record(v, &subject(v), child.pid, ids, env_names);
    if let Some(detail) = r.detail.as_mut() {
        detail["zygote"] =
            serde_json::json!({ "role": "template", "seccomp_instructions": instructions });
    }
    if let Err(e) = inner.audit.write(&r) {
        let _ = crate::sandbox::tree::kill_tree(child.pid, child.pid);
        return Err(e.to_string());
    }
    Ok(child)
}

/// Forwards the template's output (what the plugin prints while it is imported) to the audit
/// log, under the policy's output budget.
pub(super) fn forward_output(
    inner: &Inner,
    v: &Validated,
    child: &mut Sandboxed,
) -> Result<Forwarders, String> {
    let info = crate::engine::start::plugin_info(v, &subject(v)).map_err(|e| e.to_string())?;
    let tail = crate::engine::evidence::StderrTail::new();
    Ok(crate::engine::output::forward(
        &info,
        &inner.audit,
        child.child.stdout.take(),
        child.child.stderr.take(),
        v.manifest.policy.limits().output_bytes,
        &tail,
    ))
}
