"""Discovery for a host: ``plugbox list --json`` with the application's own entry-point group
and namespace package. It reads files only; no plugin code is imported, here or anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List, Optional, Sequence, Union

from ._hosting_types import Discovered, ServeError

PathLike = Union[str, "os.PathLike[str]"]


def discover(
    *, group: str = "plugbox.plugins", namespace: str = "plugbox_plugins",
    paths: Sequence[PathLike] = (), sites: Optional[Sequence[PathLike]] = None,
    python: Optional[PathLike] = None, plugbox: PathLike = "plugbox", timeout: float = 60.0,
) -> List[Discovered]:
    """Plugins in the plugin directories ``paths`` (``DIR/*/plugbox.toml``) and in Python site
    directories: distributions declaring entry points in ``group``, and the namespace package
    ``namespace`` (``myapp.plugins`` is ``SITE/myapp/plugins/NAME/plugbox.toml``).

    Runs ``plugbox list --json``, which reads files only: no plugin code is imported, here or
    anywhere. Site directories are ``sites`` when given, else those of ``python`` (default:
    this interpreter), asked with ``-I -S`` so that no ``.pth`` file runs.
    """
    argv = [os.fspath(plugbox), "list", "--json", "--group", group, "--namespace", namespace]
    for p in paths:
        argv += ["--path", os.fspath(p)]
    if sites is not None:
        for s in sites:
            argv += ["--site", os.fspath(s)]
    else:
        argv += ["--python", os.fspath(python) if python is not None else sys.executable]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()[:2000]
        raise ServeError(f"plugbox list failed (status {done.returncode}): {message}", code="invalid")
    found = json.loads(done.stdout)
    return [Discovered.from_json(item) for item in found if isinstance(item, dict)]
