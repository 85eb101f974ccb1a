//! Parent side: the resource limits a policy sets in the child.

use super::child::RlimitSetting;
use super::report::RlimitReport;
use crate::policy::Policy;

/// The `(resource, soft, hard)` settings for `policy`, with their names.
///
/// A host that is not root cannot raise a hard limit, so each value is capped at the host's
/// own hard limit: the child then gets a stricter limit than asked, never a looser one.
pub fn plan(policy: &Policy) -> (Vec<RlimitSetting>, Vec<RlimitReport>) {
    let limits = policy.limits();
    let wanted: [(
        libc::__rlimit_resource_t,
        rlimit::Resource,
        &'static str,
        u64,
        u64,
    ); 8] = [
        (
            libc::RLIMIT_AS,
            rlimit::Resource::AS,
            "RLIMIT_AS",
            limits.memory_bytes,
            limits.memory_bytes,
        ),
        // SIGXCPU at the soft limit; the kernel sends SIGKILL at the hard one.
        (
            libc::RLIMIT_CPU,
            rlimit::Resource::CPU,
            "RLIMIT_CPU",
            limits.cpu_seconds,
            limits.cpu_seconds + 1,
        ),
        (
            libc::RLIMIT_NOFILE,
            rlimit::Resource::NOFILE,
            "RLIMIT_NOFILE",
            limits.open_files,
            limits.open_files,
        ),
        (
            libc::RLIMIT_FSIZE,
            rlimit::Resource::FSIZE,
            "RLIMIT_FSIZE",
            limits.file_size_bytes,
            limits.file_size_bytes,
        ),
        (
            libc::RLIMIT_NPROC,
            rlimit::Resource::NPROC,
            "RLIMIT_NPROC",
            policy.process().max_threads.into(),
            policy.process().max_threads.into(),
        ),
        (
            libc::RLIMIT_CORE,
            rlimit::Resource::CORE,
            "RLIMIT_CORE",
            0,
            0,
        ),
        (
            libc::RLIMIT_MEMLOCK,
            rlimit::Resource::MEMLOCK,
            "RLIMIT_MEMLOCK",
            0,
            0,
        ),
        (
            libc::RLIMIT_MSGQUEUE,
            rlimit::Resource::MSGQUEUE,
            "RLIMIT_MSGQUEUE",
            0,
            0,
        ),
    ];
    let root = crate::sys::geteuid() == 0;
    let mut settings = Vec::with_capacity(wanted.len());
    let mut report = Vec::with_capacity(wanted.len());
    for (raw, resource, name, soft, hard) in wanted {
        let host_hard = if root {
            u64::MAX
        } else {
            resource.get_hard().unwrap_or(u64::MAX)
        };
        let hard = hard.min(host_hard);
        let soft = soft.min(hard);
        settings.push((raw, soft, hard));
        report.push(RlimitReport {
            resource: name,
            soft,
            hard,
        });
    }
    (settings, report)
}
