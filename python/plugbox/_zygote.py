"""A plugin's zygote template: import the plugin once, then fork confined instances on request.

The host runs this instead of :mod:`plugbox._runtime` for a plugin whose policy has
``[process] zygote = true``::

    python3 -I -S -c "...; import plugbox._zygote as z; z.main(ENTRY, DIR)"

with its control socket (``SOCK_SEQPACKET``) in ``PLUGBOX_ZYGOTE_FD``. The template is
confined like an instance, except that its seccomp filter also lets it ``clone`` with
``CLONE_PARENT | SIGCHLD``, create and enter a Landlock domain, and install a seccomp filter.
It never serves a call: it has no channel.

The exchange (one message each way):

* template -> host, once: ``{"ready": true}`` after the import, or ``{"error": TEXT}``;
* host -> template: ``{"instance": NAME, "filter_bytes": N}\\n`` and the instances' seccomp
  program (N bytes), with three descriptors: the instance's channel, stdout and stderr;
* template -> host: ``{"pid": PID}`` or ``{"error": TEXT}``.

Each forked instance, before it runs anything else: moves its output onto fds 1 and 2, closes
every descriptor but its channel, enters a nested Landlock domain scoped for signals and
abstract sockets (it can neither signal nor connect to its siblings or the template), and
stacks the instances' seccomp filter (which refuses ``clone``, ``landlock_*`` and ``seccomp``
again). Then it shakes hands and serves like any instance. A step that fails ends it with exit
status 2 before it says hello.
"""

from __future__ import annotations

import _socket
import ctypes
import gc
import posix  # not `os`, `socket`, `json`, `threading`: each costs the template's start time
import sys

from . import _bulk, _runtime, _serving  # noqa: F401 - _bulk, _serving: imported here once, not per instance
from ._channel import encode_hello
from ._commands import REGISTRY
from ._strict_json import StrictJSONError, dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

SYS_CLONE: Final = 56
SYS_SECCOMP: Final = 317
SYS_LANDLOCK_CREATE_RULESET: Final = 444
SYS_LANDLOCK_RESTRICT_SELF: Final = 446
CLONE_PARENT: Final = 0x8000
SIGCHLD: Final = 17
SECCOMP_SET_MODE_FILTER: Final = 1
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1
LANDLOCK_SCOPE_SIGNAL: Final = 2
SOCK_FILTER_BYTES: Final = 8
REQUEST_MAX_BYTES: Final = 64 * 1024
FDS_PER_INSTANCE: Final = 3

_libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL is held across each call
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def main(entry_path: str, plugin_dir: str | None = None) -> None:
    """Import the plugin, say ready, then fork instances until the host closes the socket."""
    environ = _runtime._plugbox_environment()
    raw_fd = environ.get("PLUGBOX_ZYGOTE_FD", "")
    if not (raw_fd.isascii() and raw_fd.isdigit() and len(raw_fd) <= 9) or int(raw_fd) < 3:
        _runtime._fail(f"PLUGBOX_ZYGOTE_FD must be a decimal fd number >= 3, not {raw_fd!r}")
        _runtime.flush_and_exit(_runtime.EXIT_ENVIRONMENT)
    control = _socket.socket(fileno=int(raw_fd))
    try:
        _runtime.load_entry(entry_path, plugin_dir)
    except Exception as exc:  # the plugin's own code failed: the host shows why
        import traceback

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        _answer(control, {"error": f"loading {entry_path} failed:\n{text}"})
        _runtime.flush_and_exit(_runtime.EXIT_LOAD_FAILED)
    if _threads() != 1:
        # A fork copies one thread: locks other threads hold would stay held in every instance.
        _answer(control, {"error": "the plugin started a thread while it was imported; a zygote forks only a single-threaded process"})
        _runtime.flush_and_exit(_runtime.EXIT_LOAD_FAILED)
    name, version = environ["PLUGBOX_PLUGIN_NAME"], environ["PLUGBOX_PLUGIN_VERSION"]
    try:
        hello = encode_hello(name, version, REGISTRY.names(), REGISTRY.schemas())  # once, for every fork
    except Exception as exc:  # the plugin's schemas cannot travel: spawned instances say so
        _answer(control, {"error": f"cannot encode hello: {type(exc).__name__}: {exc}"})
        _runtime.flush_and_exit(_runtime.EXIT_LOAD_FAILED)
    gc.collect()
    gc.freeze()  # what the import made is shared by the instances: keep collections off it
    _answer(control, {"ready": True})
    _serve_forks(control, environ, hello)


def _threads() -> int:
    """Threads of this process, native ones included (0 if it cannot tell: then it refuses)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _serve_forks(control: _socket.socket, environ: dict[str, str], hello: bytes) -> None:
    space = _socket.CMSG_SPACE(FDS_PER_INSTANCE * 4)
    while True:
        try:
            message, ancillary, flags, _ = control.recvmsg(REQUEST_MAX_BYTES, space)
        except OSError:
            _runtime.flush_and_exit(_runtime.EXIT_PROTOCOL)
        fds = _received_fds(ancillary)
        if not message:  # the host closed its end: the plugin is going away
            _runtime.flush_and_exit(_runtime.EXIT_OK)
        request = _parse_request(message, fds, flags)
        if isinstance(request, str):
            _close_all(fds)
            _answer(control, {"error": request})
            continue
        instance, program = request
        try:
            pid = _fork()
        except OSError as exc:
            _close_all(fds)
            _answer(control, {"error": f"clone: {exc}"})
            continue
        if pid == 0:
            _become_instance(control, fds, instance, program, environ, hello)
        _close_all(fds)
        _answer(control, {"pid": pid})


def _parse_request(message: bytes, fds: list[int], flags: int) -> tuple[str, bytes] | str:
    """``(instance name, filter program)`` from a fork request, or what is wrong with it."""
    if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
        return "the request was cut"
    if len(fds) != FDS_PER_INSTANCE:
        return f"the request carried {len(fds)} descriptors, not {FDS_PER_INSTANCE}"
    header, newline, program = message.partition(b"\n")
    try:
        fields = loads(header) if newline else None
    except (StrictJSONError, ValueError):
        fields = None
    if not isinstance(fields, dict):
        return "the request has no JSON header line"
    instance, size = fields.get("instance"), fields.get("filter_bytes")
    if not isinstance(instance, str) or size != len(program) or not program or len(program) % SOCK_FILTER_BYTES:
        return "the request's instance or filter is malformed"
    return instance, program


def _fork() -> int:
    """``clone(CLONE_PARENT | SIGCHLD)``: a copy of this process that is the host's child (the
    host reaps it and reads its status) in this process's group, with Python's fork hooks run
    as ``os.fork`` runs them.

    The raw ``clone`` skips glibc's own fork handlers (its malloc and stdio locks, and the
    thread id it caches for the calling thread). That is sound here only because the template is
    single-threaded (checked before it says ready), so no lock can be held by another thread,
    and CPython asks the kernel for thread ids rather than using glibc's cached one. One
    difference remains in the child: ``signal.pthread_kill`` aimed at its main thread from
    another thread fails with ``ESRCH`` (glibc still names the template's thread; the kernel
    refuses it as not in this process); ``raise`` and ``os.kill`` of itself work."""
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _syscall(ctypes.c_long(SYS_CLONE), ctypes.c_long(CLONE_PARENT | SIGCHLD), ctypes.c_long(0),
                   ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    errno = ctypes.get_errno()
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(errno, posix.strerror(errno))
    return pid


def _become_instance(control: _socket.socket, fds: list[int], instance: str, program: bytes,
                     environ: dict[str, str], hello: bytes) -> None:
    """In the forked child: confine further, then serve as ``instance``. Never returns."""
    channel, stdout, stderr = fds
    try:
        posix.dup2(stdout, 1)
        posix.dup2(stderr, 2)
        control.close()
        posix.closerange(3, channel)
        posix.closerange(channel + 1, 1 << 20)
        _enter_scoped_domain()
        _stack_filter(program)
    except BaseException as exc:  # noqa: BLE001 - any failure ends the child before hello
        _runtime._fail(f"zygote instance {instance!r}: confinement failed: {exc!r}")
        _runtime.flush_and_exit(_runtime.EXIT_ENVIRONMENT)
    environ_bytes = posix.environ  # bytes keys and values
    environ_bytes.pop(b"PLUGBOX_ZYGOTE_FD", None)
    environ_bytes[b"PLUGBOX_FD"] = str(channel).encode()
    environ_bytes[b"PLUGBOX_INSTANCE"] = instance.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
    status = _runtime.serve(channel, environ["PLUGBOX_PLUGIN_NAME"], environ["PLUGBOX_PLUGIN_VERSION"], hello)
    _runtime.flush_and_exit(status)


def _enter_scoped_domain() -> None:
    """A nested Landlock domain that handles no access but scopes signals and abstract unix
    sockets: this instance can reach neither its siblings nor the template."""
    attr = _RulesetAttr(0, 0, LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL)
    fd = _syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr),
                  ctypes.c_long(ctypes.sizeof(attr)), ctypes.c_long(0))
    if fd < 0:
        raise _errno_error("landlock_create_ruleset")
    try:
        if _syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_long(fd), ctypes.c_long(0)) < 0:
            raise _errno_error("landlock_restrict_self")
    finally:
        posix.close(fd)


def _stack_filter(program: bytes) -> None:
    """Installs the instances' seccomp program on top of the template's."""
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // SOCK_FILTER_BYTES, ctypes.addressof(buffer))
    if _syscall(ctypes.c_long(SYS_SECCOMP), ctypes.c_long(SECCOMP_SET_MODE_FILTER), ctypes.c_long(0),
                ctypes.byref(prog)) < 0:
        raise _errno_error("seccomp")


def _errno_error(what: str) -> OSError:
    errno = ctypes.get_errno()
    return OSError(errno, f"{what}: {posix.strerror(errno)}")


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(int.from_bytes(data[i:i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4))
    return fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            posix.close(fd)
        except OSError:
            pass


def _answer(control: _socket.socket, message: dict[str, object]) -> None:
    try:
        control.send(dumps(message))
    except OSError:
        _runtime.flush_and_exit(_runtime.EXIT_PROTOCOL)
