"""Hostile probe run inside the plugbox sandbox by the integration tests.

Usage: probe.py CASE [ARG...]. Each case tries one thing and prints one line: "ok", or the
errno name of the failure (EACCES, EPERM, ...), or a case-specific result. The tests assert
the exact line. Only the standard library and ctypes are used.
"""
import ctypes
import errno
import os
import socket
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def outcome(fn, *args):
    try:
        fn(*args)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def raw_syscall(nr, *args):
    """Calls syscall(nr, args...) and returns "ok" or the errno name."""
    cargs = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ret = libc.syscall(ctypes.c_long(nr), *cargs)
    if ret == -1:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return "ok"


def case_read(path):
    print(outcome(lambda: open(path, "rb").read(1)))


def case_write(path):
    print(outcome(lambda: open(path, "wb").write(b"x")))


def case_append(path):
    print(outcome(lambda: open(path, "ab").write(b"x")))


def case_truncate(path):
    print(outcome(os.truncate, path, 0))


def case_listdir(path):
    print(outcome(os.listdir, path))


def case_symlink_read(link, target):
    os.symlink(target, link)
    case_read(link)


def case_link(src, dst):
    print(outcome(os.link, src, dst))


def case_rename(src, dst):
    print(outcome(os.rename, src, dst))


def case_mkfifo(path):
    print(outcome(os.mkfifo, path))


def case_mknod_char(path):
    import stat
    print(outcome(os.mknod, path, stat.S_IFCHR | 0o600, os.makedev(1, 3)))


def case_exec(path, *args):
    print(outcome(os.execv, path, [path, *args]))


def case_fork():
    def go():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    print(outcome(go))


def case_spawn():
    import subprocess
    r = subprocess.run([sys.executable, "-I", "-S", "-c", "print(6*7)"], capture_output=True)
    print(r.stdout.decode().strip())


def case_memfd_exec():
    print(outcome(os.memfd_create, "x"))


def case_socket(family, kind, proto="0"):
    fam = getattr(socket, family)
    typ = getattr(socket, kind)
    print(outcome(lambda: socket.socket(fam, typ, int(proto)).close()))


def case_tcp_connect(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    print(outcome(s.connect, ("127.0.0.1", int(port))))


def case_tcp_bind(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    print(outcome(s.bind, ("127.0.0.1", int(port))))


def case_socketpair(kind):
    print(outcome(lambda: socket.socketpair(socket.AF_UNIX, getattr(socket, kind))))


def case_kill(pid, sig="15"):
    print(outcome(os.kill, int(pid), int(sig)))


def case_ptrace(pid):
    PTRACE_ATTACH = 16
    print(raw_syscall(101, PTRACE_ATTACH, int(pid), 0, 0))


def case_fds():
    found = []
    for fd in range(3, 1024):
        try:
            os.fstat(fd)
            found.append(str(fd))
        except OSError:
            pass
    print(" ".join(found) if found else "none")


def case_env():
    print(" ".join(sorted(os.environ)))


def case_ids():
    print(os.getuid(), os.getgid(), os.geteuid(), os.getegid(), os.getgroups())


def case_status(field):
    # /proc is not granted; ask the kernel through prctl instead.
    PR_GET_NO_NEW_PRIVS, PR_GET_SECCOMP = 39, 21
    if field == "nnp":
        print(libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0))
    elif field == "seccomp":
        print(libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0))
    elif field == "session":
        print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())


def case_syscall(nr, *args):
    print(raw_syscall(int(nr, 0), *[int(a, 0) for a in args]))


def case_ioctl(cmd, target="devnull"):
    buf = ctypes.create_string_buffer(b"x" * 8)
    fd = os.pipe()[0] if target == "pipe" else os.open("/dev/null", os.O_RDONLY)
    print(raw_syscall(16, fd, int(cmd, 0), ctypes.addressof(buf)))


def case_i386():
    """getpid through the i386 `int 0x80` entry: the filter must kill the process."""
    import mmap
    code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax,20; int 0x80; ret
    buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
    print("survived")


def case_threads(n):
    import threading
    results = []
    ts = [threading.Thread(target=lambda i=i: results.append(i)) for i in range(int(n))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(len(results))


def case_thread_bomb():
    import threading, time
    stop = threading.Event()
    count = 0
    try:
        while count < 100000:
            threading.Thread(target=stop.wait, daemon=True).start()
            count += 1
    except RuntimeError:
        pass
    stop.set()
    print(count)


def case_fork_bomb():
    count = 0
    try:
        while count < 100000:
            pid = os.fork()
            if pid == 0:
                import time
                time.sleep(30)
                os._exit(0)
            count += 1
    except OSError as e:
        print(errno.errorcode[e.errno], count)


def case_memory_bomb(mib):
    try:
        blocks = [bytearray(1024 * 1024) for _ in range(int(mib))]
        print("allocated", len(blocks))
    except MemoryError:
        print("MemoryError")


def case_cpu_spin():
    while True:
        pass


def case_disk_fill(path, mib):
    chunk = b"\0" * (1024 * 1024)
    written = 0
    try:
        with open(path, "wb", buffering=0) as f:
            for _ in range(int(mib)):
                written += f.write(chunk)
        print("ok", written)
    except OSError as e:
        print(errno.errorcode[e.errno], written)


def case_fd_exhaust():
    fds = []
    try:
        while len(fds) < 100000:
            fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as e:
        print(errno.errorcode[e.errno], len(fds))


def case_flood(total):
    chunk = b"y" * 65536
    try:
        left = int(total)
        while left > 0:
            left -= os.write(1, chunk[: min(left, len(chunk))])
    except BrokenPipeError:
        os._exit(32)
    os._exit(0)


def case_daemonize():
    """Double fork: the grandchild tries setsid, reports its pid, and sleeps."""
    r, w = os.pipe()
    if os.fork() == 0:
        if os.fork() == 0:
            os.close(r)
            res = outcome(os.setsid)
            os.write(w, f"{os.getpid()} setsid={res}\n".encode())
            os.close(w)
            import time
            time.sleep(60)
            os._exit(0)
        os._exit(0)
    os.close(w)
    print(os.read(r, 100).decode().strip(), flush=True)


def case_chmod(path, mode):
    print(outcome(os.chmod, path, int(mode, 8)))


def case_fchmod(path, mode):
    fd = os.open(path, os.O_RDONLY)
    print(outcome(os.fchmod, fd, int(mode, 8)))


def case_create_mode(path, mode):
    print(outcome(lambda: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, int(mode, 8)))))


def case_tmpfile_mode(directory, mode):
    print(outcome(lambda: os.close(os.open(directory, os.O_WRONLY | os.O_TMPFILE, int(mode, 8)))))


def case_mkdir_mode(path, mode):
    print(outcome(os.mkdir, path, int(mode, 8)))


def case_mkfifo_mode(path, mode):
    print(outcome(os.mkfifo, path, int(mode, 8)))


def case_utime(path):
    print(outcome(os.utime, path, (0, 0)))


def case_copy(src, dst):
    import shutil
    print(outcome(shutil.copy, src, dst))


def case_sleep(seconds):
    import time
    print("sleeping", flush=True)
    time.sleep(float(seconds))
    print("woke")


def main():
    name = "case_" + sys.argv[1]
    globals()[name](*sys.argv[2:])


main()
