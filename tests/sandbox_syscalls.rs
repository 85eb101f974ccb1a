//! The seccomp filter: each denied class returns its exact errno, foreign ABIs die of SIGSYS.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{assert_probe, probe, Workspace};

const SIGSYS_EXIT: i32 = 128 + libc::SIGSYS;

fn nr(n: libc::c_long) -> String {
    n.to_string()
}

#[test]
fn dangerous_syscalls_get_eperm() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    for (name, call) in [
        (
            "io_uring_setup",
            vec![nr(libc::SYS_io_uring_setup), "1".into(), "0".into()],
        ),
        (
            "io_uring_enter",
            vec![nr(libc::SYS_io_uring_enter), "0".into()],
        ),
        (
            "ptrace",
            vec![nr(libc::SYS_ptrace), "16".into(), "1".into()],
        ),
        (
            "process_vm_readv",
            vec![nr(libc::SYS_process_vm_readv), "1".into()],
        ),
        (
            "process_vm_writev",
            vec![nr(libc::SYS_process_vm_writev), "1".into()],
        ),
        ("keyctl", vec![nr(libc::SYS_keyctl), "0".into()]),
        ("add_key", vec![nr(libc::SYS_add_key), "0".into()]),
        ("bpf", vec![nr(libc::SYS_bpf), "0".into()]),
        (
            "perf_event_open",
            vec![nr(libc::SYS_perf_event_open), "0".into()],
        ),
        ("userfaultfd", vec![nr(libc::SYS_userfaultfd), "0".into()]),
        ("mount", vec![nr(libc::SYS_mount), "0".into()]),
        ("umount2", vec![nr(libc::SYS_umount2), "0".into()]),
        ("unshare", vec![nr(libc::SYS_unshare), "0x10000000".into()]),
        ("setns", vec![nr(libc::SYS_setns), "0".into(), "0".into()]),
        ("chroot", vec![nr(libc::SYS_chroot), "0".into()]),
        ("pivot_root", vec![nr(libc::SYS_pivot_root), "0".into()]),
        (
            "open_by_handle_at",
            vec![nr(libc::SYS_open_by_handle_at), "0".into()],
        ),
        (
            "name_to_handle_at",
            vec![nr(libc::SYS_name_to_handle_at), "0".into()],
        ),
        ("memfd_create", vec![nr(libc::SYS_memfd_create), "0".into()]),
        ("execveat", vec![nr(libc::SYS_execveat), "0".into()]),
        ("setsid", vec![nr(libc::SYS_setsid)]),
        (
            "setpgid",
            vec![nr(libc::SYS_setpgid), "0".into(), "0".into()],
        ),
        (
            "personality",
            vec![nr(libc::SYS_personality), "0x0008".into()],
        ),
        ("fork", vec![nr(libc::SYS_fork)]),
        ("vfork", vec![nr(libc::SYS_vfork)]),
        (
            "kill-other-prlimit",
            vec![nr(libc::SYS_prlimit64), "1".into(), "0".into()],
        ),
    ] {
        let mut args = vec!["syscall"];
        args.extend(call.iter().map(String::as_str));
        let run = probe(&policy, &args);
        assert_eq!(run.verdict(), "EPERM", "{name}: {run:?}");
    }
}

#[test]
fn unknown_syscalls_and_clone3_get_enosys() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    assert_probe(
        &policy,
        &["syscall", &nr(libc::SYS_clone3), "0", "0"],
        "ENOSYS",
    );
    // Syscalls in no group: a message queue, a mount listing, a never-assigned number.
    assert_probe(&policy, &["syscall", &nr(libc::SYS_mq_open), "0"], "ENOSYS");
    assert_probe(&policy, &["syscall", "457"], "ENOSYS");
    assert_probe(&policy, &["syscall", "999"], "ENOSYS");
}

#[test]
fn clone_namespace_flags_are_refused() {
    let ws = Workspace::new();
    // Even with subprocesses allowed, no CLONE_NEW* flag passes.
    let policy = ws.policy("[process]\nsubprocesses = true\n");
    for flag in [
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWCGROUP,
    ] {
        let flags = format!("{:#x}", flag | libc::SIGCHLD);
        assert_probe(
            &policy,
            &["syscall", &nr(libc::SYS_clone), &flags, "0"],
            "EPERM",
        );
    }
}

#[test]
fn process_creation_needs_subprocesses() {
    let ws = Workspace::new();
    assert_probe(&ws.policy(""), &["fork"], "EPERM");
    assert_probe(
        &ws.policy("[process]\nsubprocesses = true\n"),
        &["fork"],
        "ok",
    );
}

#[test]
fn terminal_injection_ioctls_are_refused_on_32_bits() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    assert_probe(&policy, &["ioctl", "0x5412"], "EPERM"); // TIOCSTI
    assert_probe(&policy, &["ioctl", "0x541C"], "EPERM"); // TIOCLINUX
                                                          // The high-bits bypass: the kernel truncates the command to 32 bits, so must the filter.
    assert_probe(&policy, &["ioctl", "0x100005412"], "EPERM");
    // Ordinary ioctls still work on pipes (FIONREAD)...
    assert_probe(&policy, &["ioctl", "0x541B", "pipe"], "ok");
    // ...but not on device files opened inside the sandbox (Landlock's ioctl_dev right).
    assert_probe(&policy, &["ioctl", "0x541B", "devnull"], "EACCES");
}

#[test]
fn other_syscall_abis_are_killed() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    let i386 = probe(&policy, &["i386"]);
    assert_eq!(
        i386.code, SIGSYS_EXIT,
        "i386 int 0x80 must die of SIGSYS: {i386:?}"
    );
    assert!(!i386.stdout.contains("survived"));
    let x32 = probe(&policy, &["syscall", "0x40000027"]);
    assert_eq!(
        x32.code, SIGSYS_EXIT,
        "x32 getpid must die of SIGSYS: {x32:?}"
    );
}

#[test]
fn the_filter_and_no_new_privs_are_in_place() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    assert_probe(&policy, &["status", "nnp"], "1");
    assert_probe(&policy, &["status", "seccomp"], "2");
    assert_probe(&policy, &["status", "session"], "True True");
    assert_probe(&policy, &["ids"], "65534 65534 65534 65534 []");
}
