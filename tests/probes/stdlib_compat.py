"""Standard-library behaviour a confined program relies on (tests/stdlib_compat.rs).

Each case prints one JSON object on its last line; the Rust test asserts its fields.
`python3 stdlib_compat.py CASE ARGS...`
"""
import errno
import json
import os
import sys


def outcome(fn, *args):
    try:
        fn(*args)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def write_devnull():
    with open(os.devnull, "w") as f:
        f.write("discarded")


def case_devices():
    import subprocess
    out = {
        "devnull_write": outcome(write_devnull),
        "devnull_rw": outcome(lambda: os.close(os.open("/dev/null", os.O_RDWR | os.O_TRUNC))),
        "devzero_write": outcome(lambda: os.close(os.open("/dev/zero", os.O_WRONLY))),
        "urandom_write": outcome(lambda: os.close(os.open("/dev/urandom", os.O_WRONLY))),
        "full_write": outcome(lambda: os.close(os.open("/dev/full", os.O_WRONLY))),
        "dev_listdir": outcome(os.listdir, "/dev"),
        "dev_create": outcome(lambda: os.close(os.open("/dev/plugbox-x", os.O_CREAT | os.O_WRONLY))),
    }
    run = subprocess.run(
        [sys.executable, "-c", "print('x' * 100)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    out["subprocess_devnull"] = run.returncode
    print(json.dumps(out))


def case_userdb():
    import getpass
    import grp
    import pwd
    me = pwd.getpwuid(os.getuid())
    out = {
        "name": me.pw_name,
        "dir": me.pw_dir,
        "home": os.environ.get("HOME"),
        "expanduser": os.path.expanduser("~"),
        "getuser": getpass.getuser(),
        "group": grp.getgrgid(os.getgid()).gr_name,
        "users": sorted(p.pw_name for p in pwd.getpwall()),
        "groups": sorted(g.gr_name for g in grp.getgrall()),
        "passwd_write": outcome(lambda: open("/etc/passwd", "a").close()),
        "passwd_shadow": outcome(lambda: open("/etc/shadow").close()),
    }
    print(json.dumps(out))


def status_pid(path):
    with open(path) as f:
        for line in f:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    return None


def case_proc(*others):
    import subprocess
    child = subprocess.run(
        [sys.executable, "-c",
         "import os; print(os.getpid(), [l.split()[1] for l in open('/proc/self/status')"
         " if l.startswith('Pid:')][0])"],
        capture_output=True, text=True)
    child_pid, child_status_pid = child.stdout.split()
    with open("/proc/self/maps") as f:
        maps = f.read()
    out = {
        "pid": os.getpid(),
        "listing": sorted(os.listdir("/proc")),
        "self_status_pid": status_pid("/proc/self/status"),
        "thread_self_status_pid": status_pid("/proc/thread-self/status"),
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "maps_has_python": "python" in maps,
        "cmdline": open("/proc/self/cmdline", "rb").read().split(b"\0")[1].decode(),
        "oom_write": outcome(lambda: open("/proc/self/oom_score_adj", "w").close()),
        "child_sees_itself": child_pid == child_status_pid and int(child_pid) != os.getpid(),
        "others": {pid: outcome(lambda: open(f"/proc/{pid}/status").close()) for pid in others},
        "meminfo": outcome(lambda: open("/proc/meminfo").close()),
        "sys": outcome(os.listdir, "/proc/sys"),
    }
    print(json.dumps(out))


def case_xattr(writable, readonly):
    import ctypes
    import shutil
    libc = ctypes.CDLL(None, use_errno=True)

    def raw(nr, *args):
        ret = libc.syscall(ctypes.c_long(nr), *args)
        return "ok" if ret == 0 else errno.errorcode.get(ctypes.get_errno())

    target = os.path.join(writable, "x")
    open(target, "w").close()
    fd = os.open(target, os.O_RDONLY)
    out = {
        "setxattr": outcome(os.setxattr, target, "user.t", b"1"),
        "lsetxattr": outcome(lambda: os.setxattr(target, "user.t", b"1", follow_symlinks=False)),
        "fsetxattr": outcome(os.setxattr, fd, "user.t", b"1"),
        "removexattr": outcome(os.removexattr, target, "user.t"),
        "fremovexattr": outcome(os.removexattr, fd, "user.t"),
        "setxattr_readonly": outcome(os.setxattr, readonly, "user.t", b"1"),
        # setxattrat(AT_FDCWD, path, 0, NULL, 0) and removexattrat(AT_FDCWD, path, 0, NULL)
        "setxattrat": raw(463, ctypes.c_long(-100), target.encode(), 0, None, 0),
        "removexattrat": raw(466, ctypes.c_long(-100), target.encode(), 0, None),
        "getxattr": outcome(os.getxattr, readonly, "user.copied"),
        "copy2_of_xattr_file": outcome(shutil.copy2, readonly, os.path.join(writable, "copy")),
    }
    print(json.dumps(out))


def main():
    globals()["case_" + sys.argv[1]](*sys.argv[2:])


main()
