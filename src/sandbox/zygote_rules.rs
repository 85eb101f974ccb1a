//! What a zygote template's seccomp program allows beyond its instances' program.
//!
//! A template forks instances and each instance confines itself further before it runs
//! anything ([`crate::engine`]'s zygote, `python/plugbox/_zygote.py`). For that the template,
//! and only it, may:
//! - `clone` with exactly `CLONE_PARENT | SIGCHLD`: a process that is the host's child (so the
//!   host reaps it and reads its exit status) and stays in the template's process group (so
//!   the host's teardown of the group reaches it). Any other flag set without `CLONE_THREAD`
//!   is refused as for the instances, namespace flags always;
//! - `landlock_create_ruleset` and `landlock_restrict_self`: each instance enters a nested
//!   domain scoped for signals and abstract sockets, so it can neither signal nor connect to
//!   its siblings or the template;
//! - `seccomp(SECCOMP_SET_MODE_FILTER, 0, ..)`: each instance stacks the instances' program,
//!   which refuses all of the above again.
//!
//! Every one of these only narrows what a process may do, except the `clone`, which is bounded
//! by `RLIMIT_NPROC` of the template's uid and by the group teardown. `setsid` and `setpgid`
//! stay refused: nothing the template makes can leave its group.

use super::seccomp::{cond, rule, SeccompBuildError};
use seccompiler::{SeccompCmpOp as Op, SeccompRule};
use std::collections::BTreeMap;

/// Syscalls the instances' program refuses and the template's allows (their arguments
/// checked by [`widen`]).
pub const TEMPLATE_ONLY: [i64; 3] = [
    libc::SYS_seccomp,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self,
];

/// The one `clone` flag word a template may use besides a thread's.
pub const FORK_FLAGS: u64 = libc::CLONE_PARENT as u64 | libc::SIGCHLD as u64;

/// `seccomp(2)`'s operation installing a filter.
const SECCOMP_SET_MODE_FILTER: u64 = 1;

/// Turns the instances' argument rules (a matching rule refuses the call) into the template's.
pub fn widen(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), SeccompBuildError> {
    let clone = rules.entry(libc::SYS_clone).or_default();
    let thread = libc::CLONE_THREAD as u64;
    // The instances' rule "no CLONE_THREAD: refuse" becomes "no CLONE_THREAD and not exactly
    // the fork flags: refuse". The namespace rules stay as they are.
    let no_thread = no_thread_rule()?;
    clone.retain(|r| *r != no_thread);
    clone.push(rule(vec![
        cond(0, Op::MaskedEq(thread), 0)?,
        cond(0, Op::Ne, FORK_FLAGS)?,
    ])?);
    // seccomp: only SET_MODE_FILTER, without flags (no TSYNC, no listener, no log).
    rules.insert(
        libc::SYS_seccomp,
        vec![
            rule(vec![cond(0, Op::Ne, SECCOMP_SET_MODE_FILTER)?])?,
            rule(vec![cond(1, Op::Ne, 0)?])?,
        ],
    );
    Ok(())
}

/// The instances' rule refusing a `clone` that is not a thread.
pub(super) fn no_thread_rule() -> Result<SeccompRule, SeccompBuildError> {
    let thread = libc::CLONE_THREAD as u64;
    rule(vec![cond(0, Op::MaskedEq(thread), 0)?])
}
