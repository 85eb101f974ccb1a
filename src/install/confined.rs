//! Running one install step (an sdist build, the byte-compilation) inside a plugbox sandbox:
//! the policy reads the baseline plus what the step names, writes only its own scratch
//! directory, has no network, runs as uid 65534 when plugbox is root, and has bounded memory,
//! CPU and wall time. Its output (stdout and stderr together) is kept, at most
//! [`MAX_OUTPUT_BYTES`], for the error message; the whole process tree is killed at the end.

use crate::policy::file::{
    FilesystemSection, LandlockSection, LimitsSection, NetworkSection, PolicyFile, ProcessSection,
    SupervisionSection, SyscallsSection,
};
use crate::policy::Policy;
use crate::sandbox::{spawn, tree, Environment, Prepared, SpawnRequest};
use crate::sys::{self, WaitStatus};
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Output kept from a confined step (the end of it).
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// What a confined step may touch and use.
#[derive(Debug, Clone)]
pub struct Step {
    /// Human name, for errors (`"build sdist foo-1.0.tar.gz"`).
    pub name: String,
    /// The interpreter (or program) to run, by absolute path.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment variables (the rest of the environment is empty).
    pub env: Vec<(String, OsString)>,
    /// Read-only grants beyond the baseline.
    pub read: Vec<PathBuf>,
    /// The one directory it may write.
    pub write: PathBuf,
    /// May it start processes (pip runs build backends in a subprocess)?
    pub subprocesses: bool,
    /// Wall-clock budget; the tree is killed past it.
    pub wall: Duration,
}

/// How a confined step ended, with the end of its output.
#[derive(Debug)]
pub struct StepOutcome {
    /// Its status (`None` when killed for the wall budget).
    pub status: Option<WaitStatus>,
    /// The last [`MAX_OUTPUT_BYTES`] of its output.
    pub output: String,
}

impl StepOutcome {
    /// Did it exit 0?
    pub fn success(&self) -> bool {
        self.status == Some(WaitStatus::Exited(0))
    }
}

/// The sandbox policy of a step.
pub fn policy(step: &Step) -> Result<Policy, crate::policy::PolicyError> {
    let wall_seconds = step.wall.as_secs().max(1);
    Policy::from_file(PolicyFile {
        schema: 1,
        landlock: LandlockSection::default(),
        filesystem: FilesystemSection {
            read: step.read.clone(),
            write: vec![step.write.clone()],
            execute: Vec::new(),
        },
        network: NetworkSection::default(),
        process: ProcessSection {
            subprocesses: step.subprocesses,
            max_threads: 256,
            ..ProcessSection::default()
        },
        syscalls: SyscallsSection::default(),
        limits: LimitsSection {
            memory_mib: 2048,
            cpu_seconds: wall_seconds,
            wall_seconds,
            file_size_mib: 512,
            ..LimitsSection::default()
        },
        supervision: SupervisionSection::default(),
    })
}

/// Runs `step` confined and waits for it (or for its wall budget).
pub fn run(step: &Step) -> Result<StepOutcome, String> {
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("{}: {what}: {e}", step.name);
    let policy = policy(step).map_err(|e| failed("policy", &e))?;
    let prepared =
        Prepared::new(policy, step.program.as_os_str(), None).map_err(|e| failed("prepare", &e))?;
    let mut env = Environment::clean();
    for (key, value) in &step.env {
        env.set(key.as_ref(), value);
    }
    let (reader, writer) = sys::pipe_cloexec().map_err(|e| failed("pipe", &e))?;
    let writer2 = writer.try_clone().map_err(|e| failed("pipe", &e))?;
    let reader = std::fs::File::from(reader);
    let request = SpawnRequest {
        args: step.args.clone(),
        env,
        stdin: Stdio::null(),
        stdout: Stdio::from(writer),
        stderr: Stdio::from(writer2),
        keep_fd: None,
        ids: None,
    };
    let child = spawn(&prepared, request).map_err(|e| failed("spawn", &e))?;
    let pid = child.pid;
    drop(child.child);
    let collector = std::thread::spawn(move || tail(reader));
    let status = wait(pid, Instant::now() + step.wall).map_err(|e| failed("wait", &e));
    let killed = tree::kill_tree(pid, pid).map_err(|e| failed("kill the process tree", &e));
    let output = collector.join().unwrap_or_default();
    let status = match (status?, killed?) {
        (true, reaped) => reaped,
        (false, _) => None,
    };
    Ok(StepOutcome { status, output })
}

/// Waits until `pid` exits (`true`, left a zombie for [`tree::kill_tree`] to reap) or the
/// deadline passes (`false`).
fn wait(pid: libc::pid_t, deadline: Instant) -> std::io::Result<bool> {
    let pidfd = sys::pidfd_open(pid)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut fds = [libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        if sys::poll(&mut fds, ms)? > 0 {
            sys::wait_exited_keep_zombie(pid)?;
            return Ok(true);
        }
    }
}

/// Reads the pipe to its end (every writer gone), keeping the last bytes.
fn tail(mut reader: impl Read) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * MAX_OUTPUT_BYTES {
                    kept.drain(..kept.len() - MAX_OUTPUT_BYTES);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let start = kept.len().saturating_sub(MAX_OUTPUT_BYTES);
    String::from_utf8_lossy(&kept[start..]).into_owned()
}
