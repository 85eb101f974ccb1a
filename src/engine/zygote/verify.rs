//! Believing the pid a template names only when the kernel agrees.
//!
//! Plugin code ran in the template while it imported the plugin, so its answers are
//! untrusted. A pid is accepted only if it is not the template itself, its parent is this
//! host (the template forks with `CLONE_PARENT`), and it is in the template's process group.
//! Nothing the plugin runs can join or leave a group (seccomp refuses `setsid` and `setpgid`),
//! so a process in that group is the template's own, and, being our child, its pid cannot be
//! reused before we reap it.

use std::io::Read;

/// `/proc/PID/stat` is a single line well under this.
const STAT_MAX_BYTES: u64 = 4096;

/// Checks that `pid` is our child in group `pgid`, other than its leader.
pub(super) fn forked_child(pid: libc::pid_t, pgid: libc::pid_t) -> Result<(), String> {
    if pid <= 0 || pid == pgid {
        return Err(format!(
            "the template named pid {pid}, which is not a new instance"
        ));
    }
    let (ppid, group) = parent_and_group(pid)
        .map_err(|e| format!("the template named pid {pid}, which cannot be read: {e}"))?;
    let host = crate::sys::getpid();
    if ppid != host || group != pgid {
        return Err(format!(
            "the template named pid {pid}, whose parent is {ppid} and group {group} \
             (expected parent {host} and group {pgid})"
        ));
    }
    Ok(())
}

/// The parent pid and process group of `pid`, from `/proc/PID/stat` (fields 4 and 5, after the
/// command name, which may hold any byte but ends at the last `)`).
fn parent_and_group(pid: libc::pid_t) -> std::io::Result<(libc::pid_t, libc::pid_t)> {
    let mut text = String::new();
    std::fs::File::open(format!("/proc/{pid}/stat"))?
        .take(STAT_MAX_BYTES)
        .read_to_string(&mut text)?;
    parse_stat(&text).ok_or_else(|| std::io::Error::other("unexpected /proc stat format"))
}

pub(super) fn parse_stat(text: &str) -> Option<(libc::pid_t, libc::pid_t)> {
    let after_name = text.get(text.rfind(')')? + 1..)?;
    let mut fields = after_name.split_ascii_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_parentheses_and_spaces_is_skipped() {
        let line = "4242 (a) 1 2 (x)) S 100 200 200 0 -1 4194560";
        assert_eq!(parse_stat(line), Some((100, 200)));
        assert_eq!(parse_stat("4242 (x) S"), None);
    }

    #[test]
    fn the_host_itself_is_refused_as_not_our_child() {
        let me = crate::sys::getpid();
        let err = forked_child(me, 1).unwrap_err();
        assert!(err.contains("whose parent is"), "{err}");
        assert!(forked_child(7, 7).is_err());
    }
}
