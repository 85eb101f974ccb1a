"""A tour of the sandbox: run under `plugbox exec` to see what is allowed and what is denied.

    plugbox exec --policy policies/default.toml -- /usr/bin/python3 -I -S examples/sandbox_tour.py

Needs read access to this file's directory: `.ci/demo` grants it with a small policy.
"""
import errno
import os
import socket
import threading


def attempt(label, fn):
    try:
        result = fn()
        print(f"  allowed  {label}" + (f": {result}" if result is not None else ""))
    except OSError as e:
        print(f"  denied   {label}: {errno.errorcode.get(e.errno, e.errno)} ({e.strerror})")


def run_threads():
    out = []
    ts = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return f"{len(out)} threads ran"


print(f"uid={os.getuid()} gid={os.getgid()} pid={os.getpid()} session leader={os.getsid(0) == os.getpid()}")
attempt("read the Python standard library", lambda: len(open(os.__file__).read()) and None)
attempt("start threads", run_threads)
attempt("read /etc/passwd", lambda: open("/etc/passwd").read())
attempt("write /tmp/plugbox-tour", lambda: open("/tmp/plugbox-tour", "w").write("x"))
attempt("list /home", lambda: os.listdir("/home"))
attempt("read the host's /proc/1/environ", lambda: open("/proc/1/environ").read())
attempt("open a TCP socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
attempt("open a UDP socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close())
attempt("fork a child process", lambda: os.waitpid(os.fork(), 0) and None)
attempt("signal the parent (plugbox)", lambda: os.kill(os.getppid(), 0))
attempt("leave the process group (setsid)", os.setsid)
attempt("create an executable memfd", lambda: os.memfd_create("payload"))
