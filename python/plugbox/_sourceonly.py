"""Imports beneath the plugin directory come from source only, never from ``__pycache__``.

The code digest a host pins (``code_digest`` in a grant) covers the plugin's files but not
``__pycache__``: the interpreter would import an *unchecked-hash* ``.pyc`` found there (PEP 552)
without looking at the source, so swapped bytecode would run under an unchanged digest. This
module installs a path hook, ahead of the standard one, that takes every ``sys.path`` entry (and
package ``__path__`` entry) beneath the plugin directory and serves it with a ``FileFinder``
whose source loader compiles the ``.py`` it found: it never reads nor writes ``__pycache__``.

Extension modules and sourceless ``.pyc`` files lying in the plugin tree itself (not in
``__pycache__``) stay importable, as without the hook: they are regular files the digest hashes,
so they are as pinned as the sources. Paths outside the plugin directory (the standard library,
the SDK, installed packages) keep the standard finder and their cached bytecode.

"Beneath" is decided on the lexically normalised absolute path; the plugin directory the host
passes is canonical, and the digest refuses symlinks inside it.
"""

from __future__ import annotations

import sys
from posix import getcwd
from posix import stat as _stat

try:  # what importlib.machinery re-exports; already loaded at startup, so free to import
    import _frozen_importlib_external as _machinery
except ImportError:  # pragma: no cover - other implementations
    from importlib import machinery as _machinery

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType

_S_IFMT = 0o170000
_S_IFDIR = 0o040000


class SourceOnlyLoader(_machinery.SourceFileLoader):  # type: ignore[misc,name-defined]
    """A ``SourceFileLoader`` whose code always comes from compiling the source file."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        code: CodeType = self.source_to_code(self.get_data(path), path)
        return code


def normalise(path: str) -> str:
    """``path`` made absolute (against the working directory) with ``.``, ``..`` and ``//`` resolved
    lexically."""
    if not path.startswith("/"):
        path = f"{getcwd()}/{path}"
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def beneath(path: str, root: str) -> bool:
    """Is ``path`` (normalised) ``root`` or inside it?"""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _is_dir(path: str) -> bool:
    try:
        return _stat(path or ".").st_mode & _S_IFMT == _S_IFDIR
    except (OSError, ValueError):
        return False


def path_hook(plugin_dir: str) -> Callable[[str], object]:
    """A ``sys.path_hooks`` entry serving directories beneath ``plugin_dir`` from source only."""
    root = normalise(plugin_dir)
    loaders = (
        (_machinery.ExtensionFileLoader, _machinery.EXTENSION_SUFFIXES),
        (SourceOnlyLoader, _machinery.SOURCE_SUFFIXES),
        (_machinery.SourcelessFileLoader, _machinery.BYTECODE_SUFFIXES),
    )

    def source_only_finder(path: str) -> object:
        if not beneath(normalise(path), root) or not _is_dir(path):
            raise ImportError("not a directory beneath the plugin directory", path=path)
        return _machinery.FileFinder(path, *loaders)

    return source_only_finder


def install(plugin_dir: str) -> None:
    """Put the source-only hook first in ``sys.path_hooks`` and forget the finders already
    cached for paths beneath ``plugin_dir``."""
    sys.path_hooks.insert(0, path_hook(plugin_dir))
    root = normalise(plugin_dir)
    for cached in list(sys.path_importer_cache):
        if beneath(normalise(cached), root):
            del sys.path_importer_cache[cached]
