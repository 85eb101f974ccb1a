//! `plugbox probe`: what this kernel and host can enforce, and what is missing.

use crate::policy::LANDLOCK_ABI_KNOWN;
use crate::sandbox::landlock::kernel_abi;
use crate::sys;
use serde::Serialize;

/// One probed feature.
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    /// Short name.
    pub name: &'static str,
    /// Whether it is available.
    pub available: bool,
    /// What was found, or what its absence means.
    pub detail: String,
}

/// Probes the running kernel.
pub fn probe() -> Vec<Feature> {
    let abi = kernel_abi();
    let landlock = |name: &'static str, min: u8, what: &str| Feature {
        name,
        available: abi >= min,
        detail: if abi >= min {
            format!("{what} (ABI {min}+)")
        } else {
            format!("missing: {what} needs ABI {min}, kernel has {abi}")
        },
    };
    let seccomp = sys::seccomp_mode();
    let root = sys::geteuid() == 0;
    vec![
        Feature {
            name: "landlock",
            available: abi > 0,
            detail: format!("kernel ABI {abi}; this plugbox knows up to {LANDLOCK_ABI_KNOWN}"),
        },
        landlock("landlock.refer", 2, "rename and link across directories"),
        landlock("landlock.truncate", 3, "truncate"),
        landlock("landlock.tcp", 4, "TCP bind and connect per port"),
        landlock("landlock.ioctl_dev", 5, "ioctl on device files"),
        landlock(
            "landlock.scope",
            6,
            "signal and abstract unix socket scoping",
        ),
        landlock("landlock.audit_flags", 7, "denial logging flags"),
        Feature {
            name: "seccomp",
            available: seccomp.is_ok(),
            detail: match seccomp {
                Ok(mode) => format!("filter mode available (this process: mode {mode})"),
                Err(e) => format!("missing: {e}"),
            },
        },
        Feature {
            name: "no_new_privs",
            available: sys::no_new_privs().is_ok(),
            detail: "prctl(PR_SET_NO_NEW_PRIVS)".into(),
        },
        Feature {
            name: "pidfd",
            available: sys::pidfd_open(sys::getpid()).is_ok(),
            detail: "pidfd_open, used to wait for the command".into(),
        },
        Feature {
            name: "uid_switch",
            available: root,
            detail: if root {
                "running as root: commands run as [process] uid/gid, RLIMIT_NPROC applies".into()
            } else {
                "not root: commands keep this uid; RLIMIT_NPROC counts all of its processes".into()
            },
        },
    ]
}
