//! Parent side: compiles a policy's syscall rules into one seccomp BPF program, once per policy.
//!
//! The program has three parts, run in order:
//! 1. a prologue that kills the process for any ABI other than x86-64 (the i386 `int 0x80`
//!    entry, and x32 numbers, which share x86-64's audit arch but set bit 30);
//! 2. a decision tree over the syscall number ([`super::bpf_tree`]): allowed groups return
//!    ALLOW, syscalls no policy may use return `EPERM`, extended-attribute changes not granted
//!    return `EOPNOTSUPP` ([`super::file_mode_rules`]), every other number returns `ENOSYS`
//!    (so `clone3` gets `ENOSYS` and glibc falls back to `clone`), and the few syscalls whose
//!    fate depends on their arguments jump to part 3;
//! 3. the argument checks, compiled by seccompiler: namespace clone flags, `TIOCSTI`, socket
//!    families and types, foreign pids, setuid/setgid modes ([`super::file_mode_rules`]). A
//!    matching rule returns `EPERM`; otherwise ALLOW.

use super::bpf_tree::{self, Leaf};
use super::file_mode_rules;
use super::zygote_rules;
use crate::policy::syscall_groups::{self, Syscall, SyscallGroup};
use crate::policy::Policy;
use crate::sys::SockFilter;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Kernel limit on classic-BPF program length.
const BPF_MAXINSNS: usize = 4096;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];
/// ioctl requests refused whatever the fd: they inject input into, or reconfigure, a terminal
/// that may be shared with the host.
const DENIED_IOCTLS: [u64; 2] = [libc::TIOCSTI, libc::TIOCLINUX];
const SOCK_TYPE_MASK: u64 = 0xf;

/// A compiled, ready-to-install seccomp program.
#[derive(Debug, Clone)]
pub struct SeccompProgram {
    /// The instructions, prologue included.
    pub instructions: Vec<SockFilter>,
    /// Names of the groups that make up the allow part.
    pub groups: Vec<&'static str>,
}

/// Why the seccomp program could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompBuildError {
    /// seccompiler rejected a rule or filter.
    #[error("seccomp: cannot compile the filter: {0}")]
    Compile(#[from] seccompiler::BackendError),
    /// An argument rule names a syscall no group allows (a bug in the group tables).
    #[error("seccomp: syscall {0} has argument rules but is in no allowed group")]
    Inconsistent(i64),
    /// The program exceeds the kernel's 4096-instruction limit.
    #[error("seccomp: program has {0} instructions, over the kernel's limit of 4096")]
    TooLarge(usize),
}

/// Programs compiled so far in this process, by policy. A policy's `Debug` form names every
/// field it has, so two policies with one key compile to the same program whatever fields
/// [`build`] reads, now or later.
static COMPILED: Mutex<BTreeMap<String, Arc<SeccompProgram>>> = Mutex::new(BTreeMap::new());
/// Policies remembered at most; past this the cache starts over.
const COMPILED_MAX: usize = 64;

/// The program for `policy`, compiled once per policy in this process (an engine prepares a
/// plugin again at each load and restart of its activation; many plugins share a policy).
pub fn build_cached(policy: &Policy) -> Result<Arc<SeccompProgram>, SeccompBuildError> {
    let key = format!("{policy:?}");
    if let Some(program) = COMPILED.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(program);
    }
    let program = Arc::new(build(policy)?);
    if let Ok(mut compiled) = COMPILED.lock() {
        if compiled.len() >= COMPILED_MAX {
            compiled.clear();
        }
        compiled.insert(key, Arc::clone(&program));
    }
    Ok(program)
}

/// Compiles the program for `policy`.
pub fn build(policy: &Policy) -> Result<SeccompProgram, SeccompBuildError> {
    build_for(policy, false)
}

/// Compiles the program of `policy`'s zygote template: the instance's program, plus what the
/// template needs to fork an instance and confine it further ([`super::zygote_rules`]).
pub fn build_template(policy: &Policy) -> Result<SeccompProgram, SeccompBuildError> {
    build_for(policy, true)
}

fn build_for(policy: &Policy, template: bool) -> Result<SeccompProgram, SeccompBuildError> {
    let groups = allowed_groups(policy);
    let mut allowed: BTreeSet<i64> = groups
        .iter()
        .flat_map(|g| g.syscalls.iter().map(|s| s.1))
        .collect();
    let mut arguments = argument_rules(policy)?;
    if template {
        allowed.extend(zygote_rules::TEMPLATE_ONLY);
        zygote_rules::widen(&mut arguments)?;
    }
    let mut leaves: BTreeMap<i64, Leaf> = allowed
        .iter()
        .map(|&nr| (nr, Leaf::Return(ALLOW)))
        .collect();
    for &nr in arguments.keys() {
        if !allowed.contains(&nr) {
            return Err(SeccompBuildError::Inconsistent(nr));
        }
        leaves.insert(nr, Leaf::CheckArguments);
    }
    for &(_, nr) in refused(policy) {
        if !(template && zygote_rules::TEMPLATE_ONLY.contains(&nr)) {
            leaves.insert(nr, Leaf::Return(errno_action(libc::EPERM)));
        }
    }
    for &nr in file_mode_rules::refused_ungranted(policy) {
        leaves.insert(nr, Leaf::Return(errno_action(libc::EPERM)));
    }
    for &nr in file_mode_rules::refused_metadata(policy) {
        leaves.insert(nr, Leaf::Return(errno_action(libc::EPERM)));
    }
    for &nr in file_mode_rules::refused_xattr(policy) {
        leaves.insert(nr, Leaf::Return(errno_action(libc::EOPNOTSUPP)));
    }
    let ranges = bpf_tree::ranges(
        leaves.into_iter().map(|(nr, leaf)| (nr as u32, leaf)),
        Leaf::Return(errno_action(libc::ENOSYS)),
    );
    let mut instructions = prologue();
    instructions.extend(bpf_tree::emit(&ranges));
    instructions.extend(compile(
        arguments,
        SeccompAction::Allow,
        errno(libc::EPERM),
    )?);
    if instructions.len() > BPF_MAXINSNS {
        return Err(SeccompBuildError::TooLarge(instructions.len()));
    }
    let groups = groups.iter().map(|g| g.name).collect();
    Ok(SeccompProgram {
        instructions,
        groups,
    })
}

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

fn errno_action(code: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (code as u32 & libc::SECCOMP_RET_DATA)
}

/// Syscalls refused with EPERM whatever their arguments.
fn refused(policy: &Policy) -> impl Iterator<Item = &'static Syscall> {
    let spawn: &'static [Syscall] = if policy.process().subprocesses {
        &[]
    } else {
        syscall_groups::SUBPROCESSES.syscalls
    };
    syscall_groups::NEVER.syscalls.iter().chain(spawn)
}

fn errno(code: i32) -> SeccompAction {
    SeccompAction::Errno(code as u32)
}

fn allowed_groups(policy: &Policy) -> Vec<&'static SyscallGroup> {
    let mut groups: Vec<&'static SyscallGroup> = syscall_groups::BASELINE.iter().collect();
    if policy.process().subprocesses {
        groups.push(&syscall_groups::SUBPROCESSES);
    }
    groups.extend(policy.syscall_groups().iter().copied());
    groups
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, SeccompBuildError> {
    let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)?;
    Ok(BpfProgram::try_from(filter)?)
}

/// Argument checks for allowed syscalls: a matching rule refuses the call with EPERM.
fn argument_rules(policy: &Policy) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompBuildError> {
    // Setuid/setgid modes: see `file_mode_rules`.
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = file_mode_rules::setid_rules()?;
    rules.insert(libc::SYS_clone, clone_rules(policy.process().subprocesses)?);
    rules.insert(libc::SYS_ioctl, any_equal(1, &DENIED_IOCTLS)?);
    rules.insert(libc::SYS_socket, socket_rules(policy.network().any_tcp())?);
    // socketpair: unix stream/seqpacket only. A datagram pair could `sendto` a pathname
    // socket of the host, which Landlock (below ABI 9) does not check.
    rules.insert(
        libc::SYS_socketpair,
        vec![
            rule(vec![cond(0, Op::Ne, libc::AF_UNIX as u64)?])?,
            rule(vec![cond(
                1,
                Op::MaskedEq(SOCK_TYPE_MASK),
                libc::SOCK_DGRAM as u64,
            )?])?,
        ],
    );
    // Calls that take a pid Landlock's signal scope does not cover: only 0 (self) may pass.
    for nr in [
        libc::SYS_prlimit64,
        libc::SYS_sched_getaffinity,
        libc::SYS_sched_setaffinity,
        libc::SYS_sched_getparam,
        libc::SYS_sched_getscheduler,
        libc::SYS_get_robust_list,
    ] {
        rules.insert(nr, vec![rule(vec![cond(0, Op::Ne, 0)?])?]);
    }
    // get/setpriority(which, who): only `who == 0`, and never PRIO_USER (every process of the uid).
    for nr in [libc::SYS_getpriority, libc::SYS_setpriority] {
        rules.insert(
            nr,
            vec![
                rule(vec![cond(1, Op::Ne, 0)?])?,
                rule(vec![cond(0, Op::Eq, libc::PRIO_USER as u64)?])?,
            ],
        );
    }
    // personality: reading it (0xffffffff) is fine; changing it is not.
    rules.insert(
        libc::SYS_personality,
        vec![rule(vec![cond(0, Op::Ne, 0xffff_ffff)?])?],
    );
    Ok(rules)
}

fn clone_rules(subprocesses: bool) -> Result<Vec<SeccompRule>, SeccompBuildError> {
    let mut out = Vec::new();
    for flag in CLONE_NAMESPACE_FLAGS {
        out.push(rule(vec![cond(0, Op::MaskedEq(flag), flag)?])?);
    }
    if !subprocesses {
        out.push(zygote_rules::no_thread_rule()?);
    }
    Ok(out)
}

/// `socket(family, type, protocol)`: only TCP over IPv4/IPv6, and only when the policy
/// names a port. UDP, raw, packet, netlink, vsock, alg, unix, SCTP and MPTCP are refused:
/// Landlock does not cover them.
fn socket_rules(tcp: bool) -> Result<Vec<SeccompRule>, SeccompBuildError> {
    if !tcp {
        return Ok(Vec::new());
    }
    let mut out = vec![
        rule(vec![
            cond(0, Op::Ne, libc::AF_INET as u64)?,
            cond(0, Op::Ne, libc::AF_INET6 as u64)?,
        ])?,
        rule(vec![
            cond(2, Op::Ne, 0)?,
            cond(2, Op::Ne, libc::IPPROTO_TCP as u64)?,
        ])?,
    ];
    for kind in 0..=SOCK_TYPE_MASK {
        if kind != libc::SOCK_STREAM as u64 {
            out.push(rule(vec![cond(1, Op::MaskedEq(SOCK_TYPE_MASK), kind)?])?);
        }
    }
    Ok(out)
}

fn any_equal(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SeccompBuildError> {
    values
        .iter()
        .map(|&v| rule(vec![cond(arg, Op::Eq, v)?]))
        .collect()
}

/// A 32-bit comparison: every argument filtered here is an `int` or a flag word, and
/// comparing the low 32 bits only is what defeats the "high bits set" ioctl bypass.
pub(super) fn cond(arg: u8, op: Op, value: u64) -> Result<SeccompCondition, SeccompBuildError> {
    Ok(SeccompCondition::new(arg, Len::Dword, op, value)?)
}

pub(super) fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompBuildError> {
    Ok(SeccompRule::new(conditions)?)
}

fn prologue() -> Vec<SockFilter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const ARCH_OFFSET: u32 = 4;
    const NR_OFFSET: u32 = 0;
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    vec![
        insn(LD_W_ABS, 0, 0, ARCH_OFFSET),
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, kill),
        insn(LD_W_ABS, 0, 0, NR_OFFSET),
        insn(JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(RET_K, 0, 0, kill),
    ]
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

impl SeccompProgram {
    /// sha256 of the instructions as the kernel receives them, hex. Computed on demand: it is
    /// for reports, not for the spawn path.
    pub fn sha256(&self) -> String {
        digest(&self.instructions)
    }
}

fn digest(program: &[SockFilter]) -> String {
    let mut hasher = Sha256::new();
    for ins in program {
        hasher.update(ins.code.to_ne_bytes());
        hasher.update([ins.jt, ins.jf]);
        hasher.update(ins.k.to_ne_bytes());
    }
    crate::audit::chain::hex(&hasher.finalize())
}
