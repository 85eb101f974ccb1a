//! Child side: the ordered confinement steps run between `fork` and `exec`.
//!
//! Everything here runs in a forked copy of a possibly multi-threaded host, so it is
//! async-signal-safe: it reads a [`ChildPlan`] built in the parent and makes raw syscalls from
//! [`crate::sys`]. It never allocates, locks or logs. A failed step writes its number and errno
//! to the report pipe and aborts the exec, so the command never runs unconfined.

use super::private_view::{self, ViewFds};
use crate::sys::{self, SockFilter};
use std::io;
use std::os::fd::RawFd;

/// One confinement step, numbered in the order it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Mark every inherited fd ≥ 3 close-on-exec.
    CloseFds = 1,
    /// Keep the IPC channel open across exec.
    KeepChannel,
    /// New session and process group.
    NewSession,
    /// Die when the parent thread dies.
    DieWithParent,
    /// The parent had already died before the previous step.
    ParentAlive,
    /// Own mount namespace: private `/proc`, generated user database.
    PrivateView,
    /// Resource limits.
    Rlimits,
    /// Drop the capability bounding set.
    DropBoundingSet,
    /// Lock the securebits.
    LockSecurebits,
    /// Drop supplementary groups.
    DropGroups,
    /// Switch gid.
    SetGid,
    /// Switch uid.
    SetUid,
    /// Clear the effective, permitted and inheritable capability sets.
    ClearCapabilities,
    /// Clear the ambient capability set.
    ClearAmbient,
    /// Set no_new_privs.
    NoNewPrivs,
    /// Enter the Landlock domain.
    Landlock,
    /// Install the seccomp filter.
    Seccomp,
}

impl Step {
    const ALL: [Step; 17] = [
        Step::CloseFds,
        Step::KeepChannel,
        Step::NewSession,
        Step::DieWithParent,
        Step::ParentAlive,
        Step::PrivateView,
        Step::Rlimits,
        Step::DropBoundingSet,
        Step::LockSecurebits,
        Step::DropGroups,
        Step::SetGid,
        Step::SetUid,
        Step::ClearCapabilities,
        Step::ClearAmbient,
        Step::NoNewPrivs,
        Step::Landlock,
        Step::Seccomp,
    ];

    /// Decodes a step number written by a failed child.
    pub fn from_number(n: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == n)
    }

    /// The layer a failure of this step belongs to, for error messages.
    pub fn layer(self) -> &'static str {
        match self {
            Step::CloseFds | Step::KeepChannel => "fds",
            Step::NewSession | Step::DieWithParent | Step::ParentAlive => "lifetime",
            Step::PrivateView => "private view",
            Step::Rlimits => "rlimits",
            Step::DropBoundingSet
            | Step::LockSecurebits
            | Step::ClearCapabilities
            | Step::ClearAmbient => "capabilities",
            Step::DropGroups | Step::SetGid | Step::SetUid => "identity",
            Step::NoNewPrivs => "no_new_privs",
            Step::Landlock => "landlock",
            Step::Seccomp => "seccomp",
        }
    }
}

/// Securebits locked when the host can: root gets no special treatment, uid changes do not
/// touch capabilities, and no capability can ever be raised into the ambient set again.
pub const SECUREBITS_LOCKED: u32 = (1 << 0) // SECBIT_NOROOT
    | (1 << 1) // SECBIT_NOROOT_LOCKED
    | (1 << 2) // SECBIT_NO_SETUID_FIXUP
    | (1 << 3) // SECBIT_NO_SETUID_FIXUP_LOCKED
    | (1 << 5) // SECBIT_KEEP_CAPS_LOCKED
    | (1 << 6) // SECBIT_NO_CAP_AMBIENT_RAISE
    | (1 << 7); // SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED

/// One resource limit: `(resource, soft, hard)`.
pub type RlimitSetting = (libc::__rlimit_resource_t, u64, u64);

/// Everything the child needs, computed in the parent once per policy.
#[derive(Debug)]
pub struct ChildPlan {
    /// Limits to set.
    pub rlimits: Vec<RlimitSetting>,
    /// Highest capability number the kernel knows, when the bounding set can be dropped.
    pub drop_bounding_up_to: Option<u32>,
    /// Lock [`SECUREBITS_LOCKED`] (needs CAP_SETPCAP).
    pub lock_securebits: bool,
    /// `(uid, gid)` to switch to (the host is root).
    pub switch_ids: Option<(u32, u32)>,
    /// The prepared Landlock ruleset fd.
    pub ruleset_fd: RawFd,
    /// The compiled seccomp program.
    pub seccomp: Vec<SockFilter>,
}

/// Per-spawn values the child needs besides the plan.
#[derive(Debug, Clone, Copy)]
pub struct SpawnContext {
    /// The pid the child expects as its parent.
    pub parent_pid: libc::pid_t,
    /// Write end of the report pipe (close-on-exec).
    pub report_fd: RawFd,
    /// An fd to keep open across exec at the same number (the IPC channel), if any.
    pub keep_fd: Option<RawFd>,
    /// `(uid, gid)` replacing the policy's for this spawn (a per-instance identity); only
    /// used when the plan switches ids (the host is root).
    pub ids: Option<(u32, u32)>,
    /// The private mount view to attach (root hosts only).
    pub view: Option<ViewFds>,
}

impl ChildPlan {
    /// Runs every step in order. Each step's position is explained beside it.
    pub fn apply(&self, ctx: &SpawnContext) -> io::Result<()> {
        // 1. Before anything else: nothing the host had open may reach the command. Marking
        //    (not closing) lets this plan keep using the ruleset and report fds until exec.
        step(ctx, Step::CloseFds, sys::close_range_cloexec(3))?;
        // 2. The IPC channel is the one deliberate exception.
        if let Some(fd) = ctx.keep_fd {
            step(ctx, Step::KeepChannel, sys::clear_cloexec(fd))?;
        }
        // 3. Own session and process group: no controlling terminal, and one group id that
        //    kills the whole tree. Later, seccomp forbids leaving it.
        step(ctx, Step::NewSession, sys::setsid())?;
        // 4. Die with the parent; then check it did not die before the line above took effect.
        step(ctx, Step::DieWithParent, sys::set_parent_death_kill())?;
        if sys::getppid() != ctx.parent_pid {
            return fail(ctx, Step::ParentAlive, libc::ESRCH);
        }
        // 5. The private view (own /proc, generated user database) needs CAP_SYS_ADMIN, and
        //    comes before the rlimits: RLIMIT_NOFILE could leave no fd for its clones.
        if let Some(view) = &ctx.view {
            step(ctx, Step::PrivateView, private_view::attach(view))?;
        }
        // 6. Limits before dropping privilege: raising a hard limit needs CAP_SYS_RESOURCE.
        for &(resource, soft, hard) in &self.rlimits {
            step(ctx, Step::Rlimits, sys::setrlimit(resource, soft, hard))?;
        }
        // 7. Capabilities and identity: bounding set and securebits need CAP_SETPCAP, and the
        //    id switch needs CAP_SETUID/CAP_SETGID, so they come before clearing the sets.
        if let Some(last) = self.drop_bounding_up_to {
            for cap in 0..=last {
                step(ctx, Step::DropBoundingSet, sys::capbset_drop(cap))?;
            }
        }
        if self.lock_securebits {
            step(
                ctx,
                Step::LockSecurebits,
                sys::set_securebits(SECUREBITS_LOCKED),
            )?;
        }
        if let Some((uid, gid)) = self.switch_ids.map(|planned| ctx.ids.unwrap_or(planned)) {
            step(ctx, Step::DropGroups, sys::clear_groups())?;
            step(ctx, Step::SetGid, sys::set_all_gids(gid))?;
            step(ctx, Step::SetUid, sys::set_all_uids(uid))?;
        }
        step(ctx, Step::ClearCapabilities, sys::clear_capabilities())?;
        step(ctx, Step::ClearAmbient, sys::clear_ambient_capabilities())?;
        // 8. no_new_privs: required for unprivileged Landlock and seccomp, and stops setuid
        //    binaries and file capabilities from undoing the above.
        step(ctx, Step::NoNewPrivs, sys::set_no_new_privs())?;
        // 9. Landlock after the id switch (it does not restrict setresuid, but ordering it
        //    late keeps every step above free of filesystem checks).
        step(
            ctx,
            Step::Landlock,
            sys::landlock_restrict_self(self.ruleset_fd),
        )?;
        // 10. seccomp last: it forbids setsid, prctl variants and landlock_* used above, and is
        //    installed with the raw seccomp(2) call.
        step(ctx, Step::Seccomp, sys::seccomp_set_filter(&self.seccomp))
    }
}

fn step(ctx: &SpawnContext, which: Step, result: io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => fail(ctx, which, e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Reports `(step, errno)` on the report pipe, then aborts the exec.
fn fail(ctx: &SpawnContext, which: Step, errno: i32) -> io::Result<()> {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&(which as u32).to_le_bytes());
    record[4..].copy_from_slice(&(errno as u32).to_le_bytes());
    // Nothing more can be done if this write fails; the exec is aborted either way.
    let _ = sys::write_once(ctx.report_fd, &record);
    Err(io::Error::from_raw_os_error(errno))
}
