"""The plugin process's entry point: load the plugin, shake hands, serve until shutdown.

The host runs::

    python3 -I -S -c "import sys; sys.path[:0]=[SDK_DIR]; import plugbox._runtime as r; r.main(ENTRY, DIR)"

where ``DIR`` is the plugin directory (canonical): every module beneath it is imported from its
source only (:mod:`plugbox._sourceonly`), never from ``__pycache__``.

with the channel's fd in ``PLUGBOX_FD`` and the manifest's name and version in
``PLUGBOX_PLUGIN_NAME`` and ``PLUGBOX_PLUGIN_VERSION``. The sandbox denies fork, sockets and
file writes: this needs none of them, only threads and that fd.

Exit status: 0 after ``shutdown`` or when the host closes the channel; 1 if the plugin's module
raised while loading; 2 if the environment is incomplete; 3 if the host refused the plugin; 4
on a protocol violation or a broken channel.
"""

from __future__ import annotations

import sys
from posix import _exit, getcwd  # not `os`: it costs about 1 ms of a 3 ms cold start
from posix import environ as _environb  # bytes keys and values

from ._channel import Channel, activate
from ._commands import REGISTRY
from ._errors import PlugboxError
from ._messages import HandshakeRefused
from ._sourceonly import install as _source_only_beneath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final

EXIT_OK: Final = 0
EXIT_LOAD_FAILED: Final = 1
EXIT_ENVIRONMENT: Final = 2
EXIT_REFUSED: Final = 3
EXIT_PROTOCOL: Final = 4
PLUGIN_MODULE: Final = "__plugbox_plugin__"


def main(entry_path: str, plugin_dir: str | None = None) -> None:
    """Run the plugin whose entry file is ``entry_path`` (in ``plugin_dir``, by default the
    entry's directory), then exit the process."""
    status = run(entry_path, _plugbox_environment(), plugin_dir)
    # Exit now, without waiting for threads: after shutdown, running commands are abandoned
    # (protocol.md §3.4), and a plugin's stray non-daemon thread must not keep it alive.
    flush_and_exit(status)


def run(entry_path: str, environ: Mapping[str, str], plugin_dir: str | None = None) -> int:
    """Everything :func:`main` does short of exiting; returns the exit status."""
    settings = read_environment(environ)
    if isinstance(settings, str):
        _fail(settings)
        return EXIT_ENVIRONMENT
    fd, name, version = settings
    try:
        load_entry(entry_path, plugin_dir)
    except Exception as exc:  # the plugin's own code failed: show its traceback (SystemExit passes)
        import traceback

        _fail(
            f"loading {entry_path} failed:\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        )
        return EXIT_LOAD_FAILED
    return serve(fd, name, version)


def serve(fd: int, name: str, version: str, encoded_hello: bytes | None = None) -> int:
    """Shake hands over the channel at ``fd`` for the plugin already loaded (its ``hello``
    header already encoded, if given), then serve until shutdown; returns the exit status."""
    channel = Channel(fd)
    try:
        channel.handshake(name, version, REGISTRY.names(), REGISTRY.schemas(), encoded_hello=encoded_hello)
    except HandshakeRefused as refused:
        _fail(f"the host refused plugin {name!r} {version!r}: {refused.message} [{refused.code}]")
        return EXIT_REFUSED
    except PlugboxError as exc:
        _fail(f"handshake failed: {exc}")
        return EXIT_PROTOCOL
    activate(channel)
    try:
        channel.serve(REGISTRY)
    except PlugboxError as exc:
        _fail(f"stopped: protocol violation by the host: {exc}")
        return EXIT_PROTOCOL
    finally:
        activate(None)
    return EXIT_OK


def _plugbox_environment() -> dict[str, str]:
    """The ``PLUGBOX_*`` variables, decoded as ``os.environ`` would."""
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return {
        key.decode(encoding, errors): value.decode(encoding, errors)
        for key, value in _environb.items()
        if key.startswith(b"PLUGBOX_")
    }


def read_environment(environ: Mapping[str, str]) -> tuple[int, str, str] | str:
    """``(fd, name, version)`` from the environment, or the error message."""
    missing = [
        key for key in ("PLUGBOX_FD", "PLUGBOX_PLUGIN_NAME", "PLUGBOX_PLUGIN_VERSION") if not environ.get(key)
    ]
    if missing:
        return f"missing environment variable(s) {', '.join(missing)}: run this plugin with plugbox"
    raw_fd = environ["PLUGBOX_FD"]
    if not (raw_fd.isascii() and raw_fd.isdigit() and len(raw_fd) <= 9) or int(raw_fd) < 3:
        return f"PLUGBOX_FD must be a decimal fd number >= 3 (0-2 are stdio), not {raw_fd!r}"
    return int(raw_fd), environ["PLUGBOX_PLUGIN_NAME"], environ["PLUGBOX_PLUGIN_VERSION"]


def load_entry(entry_path: str, plugin_dir: str | None = None) -> None:
    """Execute the entry file as module ``__plugbox_plugin__``, its directory first on sys.path,
    after making every module beneath ``plugin_dir`` (default: that directory) import from
    source only."""
    path = entry_path if entry_path.startswith("/") else f"{getcwd()}/{entry_path}"
    entry_dir = path.rpartition("/")[0] or "/"
    _source_only_beneath(plugin_dir or entry_dir)
    sys.path.insert(0, entry_dir)
    module = type(sys)(PLUGIN_MODULE)  # types.ModuleType, without importing `types`
    module.__file__ = path
    sys.modules[PLUGIN_MODULE] = module
    with open(path, "rb") as source:
        code = compile(source.read(), path, "exec")
    exec(code, module.__dict__)


def flush_and_exit(status: int) -> None:
    """Flush stdout and stderr, then exit at once (without waiting for threads)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    _exit(status)


def _fail(text: str) -> None:
    try:
        sys.stderr.write(f"plugbox: {text}\n")
    except (AttributeError, OSError, ValueError):
        pass
