"""plugbox: the Python SDK for plugins that run in the plugbox sandbox.

A plugin exports commands with :func:`command`, calls the host's capabilities with
:func:`plugbox.host.call`, and logs with :mod:`plugbox.log`. The wire protocol is
``docs/protocol.md`` (version 1) in the plugbox repository.
"""

# No `from __future__ import annotations` here: the first one imports `__future__`, which
# _preload() below does faster.
import sys


def _load_pyc(name, source, cached, package):  # type: (str, str, str, str) -> bool
    """Import module ``name`` from ``cached``, its byte code, as ``import`` would: only when
    ``import`` would use that file (same magic number; timestamp-based; the source's mtime and
    size unchanged), with the same spec, loader and attributes. Returns ``False`` (nothing
    done) otherwise, for the ordinary ``import`` to deal with."""
    import _io
    import marshal
    from posix import stat

    import _frozen_importlib as bootstrap
    import _frozen_importlib_external as external

    try:
        with _io.FileIO(cached, "r") as file:
            data = file.readall()
        st = stat(source)
    except OSError:
        return False
    if (
        len(data) < 16
        or data[:4] != external.MAGIC_NUMBER
        or data[4:8] != b"\0\0\0\0"  # timestamp-based: the only kind checked here
        or int.from_bytes(data[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
        or int.from_bytes(data[12:16], "little") != st.st_size & 0xFFFFFFFF
    ):
        return False
    code = marshal.loads(memoryview(data)[16:])
    loader = external.SourceFileLoader(name, source)
    spec = bootstrap.ModuleSpec(name, loader, origin=source)
    spec.cached = cached
    spec.has_location = True
    module = type(sys)(name)
    module.__spec__ = spec
    module.__loader__ = loader
    module.__file__ = source
    module.__cached__ = cached
    module.__package__ = package
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return True


def _load_extension(name, directory):  # type: (str, str) -> None
    """Import the extension module ``name`` from ``directory`` if it is there."""
    import _imp
    from posix import stat

    import _frozen_importlib as bootstrap
    import _frozen_importlib_external as external

    for suffix in _imp.extension_suffixes():
        path = f"{directory}/{name}{suffix}"
        try:
            stat(path)
        except OSError:
            continue
        spec = bootstrap.ModuleSpec(name, external.ExtensionFileLoader(name, path), origin=path)
        spec.has_location = True
        load = getattr(bootstrap, "_load", None)  # importlib's own, private: 3.4 to 3.13 at least
        if load is not None:
            load(spec)
        return


def _preload():  # type: () -> None
    """Import what the SDK needs, without the finders: the standard library's ``__future__`` and
    ``_json``, then the SDK's modules in dependency order. The finders list and search every
    directory on ``sys.path`` and cost about 60 us per module on a small machine, most of a
    millisecond of a plugin's cold start. Whatever cannot be loaded so (no or stale ``.pyc``,
    a hash-based one, ``-O``, a ``pycache_prefix``, no ``sys._stdlib_dir``) is left to the
    ordinary ``import`` statements. The standard library's two modules are its own, as the
    finders find them: nothing precedes the standard library on ``sys.path`` at this point
    but this SDK, whose directory holds neither name."""
    tag = sys.implementation.cache_tag
    if tag is None or sys.flags.optimize or sys.pycache_prefix is not None:
        return
    stdlib = getattr(sys, "_stdlib_dir", None)
    if stdlib and "__future__" not in sys.modules:
        _load_pyc("__future__", f"{stdlib}/__future__.py", f"{stdlib}/__pycache__/__future__.{tag}.pyc", "")
    if stdlib and "_json" not in sys.modules:
        _load_extension("_json", f"{stdlib}/lib-dynload")
    here = __spec__.submodule_search_locations[0]
    package = sys.modules[__name__]
    for name in _PRELOADED:
        full = f"{__name__}.{name}"
        if full in sys.modules:
            continue
        source = f"{here}/{name}.py"
        if _load_pyc(full, source, f"{here}/__pycache__/{name}.{tag}.pyc", __name__):
            setattr(package, name, sys.modules[full])


# In dependency order, so that each module finds the ones it imports already loaded.
_PRELOADED = (
    "_errors",
    "_strict_json",
    "_frames",
    "_messages",
    "_calls",
    "_channel",
    "_commands",
    "host",
    "log",
    # What the plugin runtime needs before it is ready (its first health probe included).
    "_sourceonly",
    "_schema",
    "_runtime",
    "_serving",
)
_preload()

from . import host, log  # noqa: E402
from ._commands import command  # noqa: E402
from ._errors import (  # noqa: E402
    Cancelled,
    CapabilityDenied,
    HostError,
    InvalidArgument,
    LimitExceeded,
    PlugboxError,
    PluginCrashed,
    ProtocolError,
    Timeout,
    Unavailable,
)

__all__ = [
    "Cancelled",
    "CapabilityDenied",
    "HostError",
    "InvalidArgument",
    "LimitExceeded",
    "PlugboxError",
    "PluginCrashed",
    "ProtocolError",
    "Timeout",
    "Unavailable",
    "command",
    "host",
    "log",
]

__version__ = "0.1.0"
