//! Helpers of the zygote suites: process groups, and a plugin that forks unasked.

use std::time::Duration;

/// Plugin code that, only while it is imported in a zygote template, forks a process of its
/// own (`clone(CLONE_PARENT | SIGCHLD)`, as the template may) that sleeps for ever: the host's
/// child, in the template's group, which nobody asked for and which never exits by itself.
pub const UNASKED_FORK: &str = "import ctypes, sys, time\nif 'plugbox._zygote' in sys.modules:\n    libc = ctypes.CDLL(None)\n    libc.syscall.restype = ctypes.c_long\n    if libc.syscall(*[ctypes.c_long(a) for a in (56, 0x8011, 0, 0, 0, 0)]) == 0:\n        while True:\n            time.sleep(1000)\n";

/// Pids whose process group is `pgid`, its leader included.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        if after.split(' ').nth(2).and_then(|g| g.parse().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// Waits for `pid` to exit (its pidfd becomes readable), at most `limit`; `false` if it did not.
pub async fn exits_within(pid: i32, limit: Duration) -> bool {
    let Ok(fd) = plugbox::sys::pidfd_open(pid) else {
        return true; // already gone and reaped
    };
    let fd = plugbox::sys::async_owned_fd(fd).unwrap();
    tokio::time::timeout(limit, fd.readable()).await.is_ok()
}
