//! SIGTERM and SIGINT for `run` and `serve`: instead of dying at once with plugins running
//! and the audit log unsealed, the command stops in order (unload every plugin, seal the
//! log). Installed after the engine has started, so its host-death watchdog (a fork of this
//! process) keeps the default actions.

use std::os::fd::{AsFd, OwnedFd};
use tokio::io::unix::AsyncFd;

/// The signals that stop `run` and `serve` in order.
const STOPPING: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// A termination signal, once one arrives.
pub struct Termination(AsyncFd<OwnedFd>);

impl Termination {
    /// Installs the handlers (once per process).
    pub fn install() -> Result<Self, String> {
        let fd = plugbox::sys::termination_pipe(&STOPPING)
            .and_then(plugbox::sys::async_owned_fd)
            .map_err(|e| format!("signals: {e}"))?;
        Ok(Self(fd))
    }

    /// Waits for the next SIGTERM or SIGINT; returns its number.
    pub async fn recv(&self) -> libc::c_int {
        loop {
            let Ok(mut guard) = self.0.readable().await else {
                return std::future::pending().await;
            };
            match guard.try_io(|fd| plugbox::sys::read_signal(fd.get_ref().as_fd())) {
                Ok(Ok(sig)) => return sig,
                Ok(Err(_)) => return std::future::pending().await,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The name of a stopping signal.
pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}
