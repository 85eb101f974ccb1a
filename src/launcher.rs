//! `plugbox exec`: run one confined command to completion, forwarding its output.
//!
//! The launcher spawns the command with its stdout and stderr on pipes, forwards both until
//! `output_bytes` have passed (then closes them, so further writes fail with `EPIPE`), enforces
//! `wall_seconds`, and when the command ends or the time is up, kills and reaps the whole
//! process tree. It is a subreaper, so double-forked descendants come back to it to be reaped.
//! When the command may create processes, a watchdog (`sandbox::watchdog`) kills the tree if
//! the launcher itself is killed.

use crate::sandbox::tree;
use crate::sandbox::{spawn, Environment, Prepared, SpawnError, SpawnRequest, Watchdog};
use crate::sys::{self, WaitStatus};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{ChildStderr, ChildStdout, Stdio};
use std::time::{Duration, Instant};

/// How a launched command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The command's own status.
    pub status: WaitStatus,
    /// The wall-clock limit was reached and the tree was killed.
    pub wall_timeout: bool,
    /// Output reached `output_bytes` and was cut.
    pub output_cut: bool,
}

impl ExecOutcome {
    /// The exit code `plugbox exec` reports: the command's, or 128+N for signal N.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            WaitStatus::Exited(code) => code,
            WaitStatus::Signaled(sig) => 128 + sig,
        }
    }
}

/// Why the launcher failed (the command may not have run).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Spawning failed.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// Supervising the running command failed.
    #[error("supervise: {what}: {source}")]
    Supervise {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
}

fn supervise_err(what: &'static str) -> impl FnOnce(io::Error) -> LaunchError {
    move |source| LaunchError::Supervise { what, source }
}

/// Spawns `prepared` with `args` and `env`, and supervises it to the end.
pub fn run(
    prepared: &Prepared,
    args: Vec<OsString>,
    env: Environment,
) -> Result<ExecOutcome, LaunchError> {
    // Before becoming a subreaper, so that the watchdog is re-parented to init, not to us.
    let watchdog = start_watchdog(prepared)?;
    sys::set_child_subreaper().map_err(supervise_err("prctl(PR_SET_CHILD_SUBREAPER)"))?;
    let limits = prepared.policy().limits();
    let request = SpawnRequest {
        args,
        env,
        stdin: Stdio::inherit(),
        stdout: Stdio::piped(),
        stderr: Stdio::piped(),
        keep_fd: None,
        ids: None,
    };
    let started = Instant::now();
    let mut child = spawn(prepared, request)?;
    let pid = child.pid;
    if let Some(watchdog) = &watchdog {
        // The first process leads the group (it called setsid), so its pid is the group id.
        if let Err(e) = watchdog.register(pid) {
            // Fail closed: a tree the watchdog does not guard does not run.
            let _ = tree::kill_tree(pid, pid);
            return Err(supervise_err("register with the watchdog")(e));
        }
    }
    let pidfd = sys::pidfd_open(pid).map_err(supervise_err("pidfd_open"))?;
    let mut output = Output {
        stdout: child.child.stdout.take(),
        stderr: child.child.stderr.take(),
        budget: limits.output_bytes,
        cut: false,
    };
    let deadline = limits.wall_budget().map(|budget| started + budget);
    let wall_timeout = output.pump_until_exit(pidfd.as_raw_fd(), deadline)?;
    if !wall_timeout {
        sys::wait_exited_keep_zombie(pid).map_err(supervise_err("waitid"))?;
    }
    let status = tree::kill_tree(pid, pid).map_err(supervise_err("kill process tree"))?;
    if let Some(watchdog) = watchdog {
        // The group is empty and its id free for reuse: the watchdog must forget it. Failing
        // here changes nothing for the command, which has ended.
        let _ = watchdog.unregister(pid);
    }
    output.drain()?;
    let status = status.unwrap_or(WaitStatus::Signaled(libc::SIGKILL));
    if wall_timeout {
        eprintln!(
            "plugbox: limits: wall_seconds ({}) reached; process tree killed",
            limits.wall_seconds
        );
    }
    if output.cut {
        eprintln!(
            "plugbox: limits: output_bytes ({}) reached; output cut",
            limits.output_bytes
        );
    }
    Ok(ExecOutcome {
        status,
        wall_timeout,
        output_cut: output.cut,
    })
}

/// Starts the host-death watchdog when the command may create processes: SIGKILLing
/// `plugbox exec` then kills its whole tree too. A command without subprocesses is a single
/// process, which `PR_SET_PDEATHSIG` already kills, so it does not pay for the fork.
fn start_watchdog(prepared: &Prepared) -> Result<Option<Watchdog>, LaunchError> {
    if !prepared.policy().process().subprocesses {
        return Ok(None);
    }
    Watchdog::start(1)
        .map(Some)
        .map_err(supervise_err("start the watchdog"))
}

/// The command's two output pipes and what is left of the output budget.
struct Output {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    budget: u64,
    cut: bool,
}

impl Output {
    /// Forwards output until the command's first process exits (`false`) or the deadline, if
    /// any, passes (`true`).
    fn pump_until_exit(
        &mut self,
        pidfd: RawFd,
        deadline: Option<Instant>,
    ) -> Result<bool, LaunchError> {
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(true);
            }
            let left = deadline.map_or(Duration::from_secs(60), |d| d - now);
            let wait_ms = left.as_millis().min(60_000) as i32 + 1;
            let mut fds = [
                pollfd(self.stdout.as_ref().map(AsRawFd::as_raw_fd)),
                pollfd(self.stderr.as_ref().map(AsRawFd::as_raw_fd)),
                pollfd(Some(pidfd)),
            ];
            sys::poll(&mut fds, wait_ms).map_err(supervise_err("poll"))?;
            if fds[0].revents != 0 {
                self.forward(Stream::Out)?;
            }
            if fds[1].revents != 0 {
                self.forward(Stream::Err)?;
            }
            if fds[2].revents != 0 {
                return Ok(false);
            }
        }
    }

    /// After the tree is dead: forward what is still buffered in the pipes.
    fn drain(&mut self) -> Result<(), LaunchError> {
        while self.stdout.is_some() {
            self.forward(Stream::Out)?;
        }
        while self.stderr.is_some() {
            self.forward(Stream::Err)?;
        }
        Ok(())
    }

    /// One read from a pipe, forwarded within the budget. EOF closes the pipe.
    fn forward(&mut self, which: Stream) -> Result<(), LaunchError> {
        let mut buf = [0u8; 64 * 1024];
        let read = match which {
            Stream::Out => self.stdout.as_mut().map(|p| p.read(&mut buf)),
            Stream::Err => self.stderr.as_mut().map(|p| p.read(&mut buf)),
        };
        let n = match read {
            None => return Ok(()),
            Some(Ok(0)) => {
                self.close(which);
                return Ok(());
            }
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Some(Err(e)) => return Err(supervise_err("read output")(e)),
        };
        let allowed = (n as u64).min(self.budget) as usize;
        self.budget -= allowed as u64;
        // A closed host stdout or stderr only means nobody reads: keep supervising.
        let _ = match which {
            Stream::Out => write_flush(&mut io::stdout().lock(), &buf[..allowed]),
            Stream::Err => write_flush(&mut io::stderr().lock(), &buf[..allowed]),
        };
        if allowed < n {
            // Over budget: close both pipes; the command's next write fails with EPIPE.
            self.cut = true;
            self.stdout = None;
            self.stderr = None;
        }
        Ok(())
    }

    fn close(&mut self, which: Stream) {
        match which {
            Stream::Out => self.stdout = None,
            Stream::Err => self.stderr = None,
        }
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

fn write_flush(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes)?;
    w.flush()
}

fn pollfd(fd: Option<RawFd>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    }
}
