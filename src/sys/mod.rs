//! Raw system calls: the only module allowed to contain `unsafe`.
//!
//! Every function here is a thin wrapper over one syscall (or libc call that is a single
//! syscall). Functions used between `fork` and `exec` are async-signal-safe: they do not
//! allocate, lock or touch thread-local state beyond `errno`.
//!
//! One submodule is more than a wrapper: [`fork_watchdog`] (in `sys/watchdog.rs`) forks the
//! host-death watchdog and holds the code that process runs, under the same rules.
#![allow(unsafe_code)]

use std::io;

pub mod c_abi;
mod confine;
mod fs;
mod inotify;
mod ipc;
mod lock;
mod memfd;
mod mount;
mod process;
mod signal;
mod socket;
mod watchdog;
pub use confine::*;
pub use fs::*;
pub use inotify::DirWatch;
pub use ipc::*;
pub use lock::*;
pub use memfd::*;
pub use mount::*;
pub use process::*;
pub use signal::{read_signal, termination_pipe};
pub use socket::*;
pub use watchdog::{
    fork_watchdog, is_child_subreaper, recv_record, send_record, set_send_timeout,
    socketpair_seqpacket, try_waitpid,
};

/// One classic-BPF instruction, as the kernel's `struct sock_filter`.
pub use seccompiler::sock_filter as SockFilter;

/// Converts a `-1`-means-error return value into an `io::Result` without allocating.
fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
