//! Parent side: one spawn of a prepared policy: fork, the child's steps, exec.

use super::child::{SpawnContext, Step};
use super::env::Environment;
use super::prepare::Prepared;
use crate::sys;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, Command, Stdio};

/// Why a spawn failed. The command did not run.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A confinement step failed in the child.
    #[error("{}: step {step:?} failed: {source}", step.layer())]
    Step {
        /// The step.
        step: Step,
        /// The errno it failed with.
        source: io::Error,
    },
    /// Every step succeeded but `execve` failed (Landlock denied it, or the file vanished).
    #[error("exec: {path}: {source}")]
    Exec {
        /// The program.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The fork or a parent-side syscall failed.
    #[error("spawn: {what}: {source}")]
    Host {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
}

/// What to spawn: the arguments after the program, the environment and the stdio.
#[derive(Debug)]
pub struct SpawnRequest {
    /// Arguments (argv\[1..\]).
    pub args: Vec<OsString>,
    /// The environment (already cleaned).
    pub env: Environment,
    /// stdin.
    pub stdin: Stdio,
    /// stdout.
    pub stdout: Stdio,
    /// stderr.
    pub stderr: Stdio,
    /// An fd (not close-on-exec after the steps) to hand to the command, such as the IPC
    /// channel.
    pub keep_fd: Option<RawFd>,
    /// `(uid, gid)` for this spawn instead of the policy's, when the host is root (such as a
    /// uid of its own per plugin instance). Neither may be 0.
    pub ids: Option<(u32, u32)>,
}

/// A running, confined process. Its pid is also its process-group id.
#[derive(Debug)]
pub struct Sandboxed {
    /// The std handle (for its stdio pipes).
    pub child: Child,
    /// Pid and process-group id.
    pub pid: libc::pid_t,
}

/// Forks, confines and execs `prepared`'s command.
pub fn spawn(prepared: &Prepared, request: SpawnRequest) -> Result<Sandboxed, SpawnError> {
    spawn_with(prepared, prepared.plan(), request)
}

/// Forks, confines and execs `prepared`'s command as its zygote template: confined the same
/// way but for the template's seccomp program ([`super::zygote_rules`]).
pub fn spawn_template(prepared: &Prepared, request: SpawnRequest) -> Result<Sandboxed, SpawnError> {
    let plan = prepared.template_plan().ok_or(SpawnError::Host {
        what: "zygote",
        source: io::Error::new(io::ErrorKind::InvalidInput, "the policy has no zygote"),
    })?;
    spawn_with(prepared, plan, request)
}

fn spawn_with(
    prepared: &Prepared,
    plan: std::sync::Arc<super::child::ChildPlan>,
    request: SpawnRequest,
) -> Result<Sandboxed, SpawnError> {
    if let Some((uid, gid)) = request.ids {
        if uid == 0 || gid == 0 {
            return Err(SpawnError::Host {
                what: "identity",
                source: io::Error::new(io::ErrorKind::InvalidInput, "uid and gid 0 are refused"),
            });
        }
    }
    let (uid, gid) = request.ids.unwrap_or(prepared.ids());
    let view = prepared
        .view_for(uid, gid)
        .map_err(|source| SpawnError::Host {
            what: "private view",
            source,
        })?;
    let (report_rx, report_tx) = sys::pipe_cloexec().map_err(|source| SpawnError::Host {
        what: "pipe2",
        source,
    })?;
    let ctx = SpawnContext {
        parent_pid: sys::getpid(),
        report_fd: report_tx.as_raw_fd(),
        keep_fd: request.keep_fd,
        ids: request.ids,
        view,
    };
    let path = prepared.command().path();
    let mut command = Command::new(path);
    command
        .args(&request.args)
        .env_clear()
        .envs(request.env.vars())
        .stdin(request.stdin)
        .stdout(request.stdout)
        .stderr(request.stderr);
    sys::register_pre_exec(&mut command, move || plan.apply(&ctx));
    let spawned = command.spawn();
    drop(report_tx);
    match spawned {
        Ok(child) => Ok(Sandboxed {
            pid: child.id() as libc::pid_t,
            child,
        }),
        Err(source) => {
            let mut record = [0u8; 8];
            let failed_step = match std::fs::File::from(report_rx).read_exact(&mut record) {
                Ok(()) => Step::from_number(u32::from_le_bytes([
                    record[0], record[1], record[2], record[3],
                ])),
                Err(_) => None,
            };
            Err(match failed_step {
                Some(step) => SpawnError::Step { step, source },
                None => SpawnError::Exec {
                    path: path.display().to_string(),
                    source,
                },
            })
        }
    }
}
