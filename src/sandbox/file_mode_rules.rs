//! Parent side: the seccomp rules for file modes and metadata, which Landlock does not cover.
//!
//! Landlock has no access right for `chmod`, `chown`, `utime` or extended attributes: on a
//! file its uid owns, a plugin could change them even where its grant is read-only, and it
//! could create setuid or setgid files for someone else to run later. Two rules close that
//! (the model is systemd's `RestrictSUIDSGID=`):
//!
//! 1. **No setuid or setgid bit, ever.** `chmod`, `fchmod`, `fchmodat`, `fchmodat2` with
//!    `S_ISUID` or `S_ISGID` in the mode, and `open`/`openat`/`creat`/`mkdir`/`mkdirat`/
//!    `mknod`/`mknodat` creating with such a mode, fail with `EPERM`. `openat2` carries its
//!    mode in a struct a filter cannot read, so it fails with `ENOSYS` (it is in no group);
//!    glibc and CPython never need it.
//! 2. **No metadata changes without a write grant.** A policy whose `[filesystem] write` is
//!    empty gives the plugin nothing whose mode, owner, times or attributes it may change: the
//!    chmod, chown and utime families fail with `EPERM`, whatever the file.
//! 3. **Changing owners is "not permitted" unless granted.** Without `@chown`, the chown
//!    family fails with `EPERM` (as for an unprivileged user giving a file away), not with
//!    the `ENOSYS` of an unknown syscall, which callers do not expect.
//! 4. **Extended attributes are "not supported here" unless granted.** Setting or removing one
//!    (`setxattr`, `removexattr` and their `l`/`f`/`at` forms) fails with `EOPNOTSUPP`, as on a
//!    filesystem without xattrs, unless the policy allows `@xattr-write` *and* grants a write
//!    path. Code probing for xattr support (CPython's `shutil.copystat`, its test suite)
//!    expects that errno; `ENOSYS` made it raise.
//!
//! With a write grant, mode (without setuid/setgid), times and (if `@chown`/`@xattr-write`
//! are allowed) owners and attributes can be changed on any file the plugin's uid owns, as
//! `shutil.copy` needs. Under the engine each instance has a fresh uid, which owns only what
//! it created in its writable areas; SECURITY.md states the remaining gap.

use super::seccomp::{cond, rule, SeccompBuildError};
use crate::policy::syscall_groups;
use crate::policy::Policy;
use seccompiler::{SeccompCmpOp as Op, SeccompRule};
use std::collections::BTreeMap;

const SETID_BITS: [u64; 2] = [libc::S_ISUID as u64, libc::S_ISGID as u64];
const O_CREAT: u64 = libc::O_CREAT as u64;
/// `O_TMPFILE` without its `O_DIRECTORY` part: the bit that makes an open create a file.
const O_TMPFILE_BIT: u64 = (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64;

/// Syscalls that change metadata, refused with `EPERM` when the policy grants no write path.
const METADATA_CHANGES: [i64; 12] = [
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_chown,
    libc::SYS_fchown,
    libc::SYS_lchown,
    libc::SYS_fchownat,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_utimensat,
    libc::SYS_futimesat,
];

/// `setxattrat` and `removexattrat` (Linux 6.13), which libc does not name yet.
const SYS_SETXATTRAT: i64 = 463;
const SYS_REMOVEXATTRAT: i64 = 466;

/// Syscalls that set or remove extended attributes, refused with `EOPNOTSUPP` unless granted.
pub const XATTR_CHANGES: [i64; 8] = [
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    SYS_SETXATTRAT,
    SYS_REMOVEXATTRAT,
];

/// Syscalls refused with `EPERM` whatever their arguments, for this policy.
pub fn refused_metadata(policy: &Policy) -> &'static [i64] {
    if policy.filesystem().write.is_empty() {
        &METADATA_CHANGES
    } else {
        &[]
    }
}

const CHOWN: [i64; 4] = [
    libc::SYS_chown,
    libc::SYS_fchown,
    libc::SYS_lchown,
    libc::SYS_fchownat,
];

/// Syscalls refused with `EPERM` for this policy because their group is not granted: the
/// chown family without `@chown`.
pub fn refused_ungranted(policy: &Policy) -> &'static [i64] {
    if granted(policy, syscall_groups::CHOWN) {
        &[]
    } else {
        &CHOWN
    }
}

fn granted(policy: &Policy, group: &str) -> bool {
    policy.syscall_groups().iter().any(|g| g.name == group)
}

/// Syscalls refused with `EOPNOTSUPP` for this policy: the xattr-changing family, unless the
/// policy allows `@xattr-write` and grants a write path.
pub fn refused_xattr(policy: &Policy) -> &'static [i64] {
    if granted(policy, syscall_groups::XATTR_WRITE) && !policy.filesystem().write.is_empty() {
        &[]
    } else {
        &XATTR_CHANGES
    }
}

/// Argument rules refusing setuid/setgid modes; a matching rule returns `EPERM`.
pub fn setid_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompBuildError> {
    let mut rules = BTreeMap::new();
    // (syscall, index of its mode argument): the mode always applies.
    for (nr, mode) in [
        (libc::SYS_chmod, 1),
        (libc::SYS_fchmod, 1),
        (libc::SYS_fchmodat, 2),
        (libc::SYS_fchmodat2, 2),
        (libc::SYS_creat, 1),
        (libc::SYS_mkdir, 1),
        (libc::SYS_mkdirat, 2),
        (libc::SYS_mknod, 1),
        (libc::SYS_mknodat, 2),
    ] {
        rules.insert(nr, mode_has_setid(mode)?);
    }
    // (syscall, flags argument, mode argument): the mode applies only when the open creates.
    for (nr, flags, mode) in [(libc::SYS_open, 1, 2), (libc::SYS_openat, 2, 3)] {
        rules.insert(nr, creating_with_setid(flags, mode)?);
    }
    Ok(rules)
}

fn mode_has_setid(mode: u8) -> Result<Vec<SeccompRule>, SeccompBuildError> {
    SETID_BITS
        .iter()
        .map(|&bit| rule(vec![cond(mode, Op::MaskedEq(bit), bit)?]))
        .collect()
}

fn creating_with_setid(flags: u8, mode: u8) -> Result<Vec<SeccompRule>, SeccompBuildError> {
    let mut out = Vec::new();
    for create in [O_CREAT, O_TMPFILE_BIT] {
        for bit in SETID_BITS {
            out.push(rule(vec![
                cond(flags, Op::MaskedEq(create), create)?,
                cond(mode, Op::MaskedEq(bit), bit)?,
            ])?);
        }
    }
    Ok(out)
}
