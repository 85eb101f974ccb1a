"""The SDK's preload (``plugbox._preload``): its modules come from their byte code without the
finders, exactly as ``import`` would load them, and never from byte code ``import`` would refuse."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from fakehost import PYTHON, SDK_DIR

REPORT = """
import sys, json
sys.path[:0] = [{sdk!r}]
import plugbox._runtime, plugbox
import importlib.machinery as m
out = {{}}
for name in sorted(n for n in sys.modules if n.startswith("plugbox") or n in ("__future__", "_json")):
    mod = sys.modules[name]
    spec = mod.__spec__
    out[name] = {{
        "origin": spec.origin,
        "cached": getattr(mod, "__cached__", None),
        "loader": type(mod.__loader__).__name__,
        "package": mod.__package__,
        "file": getattr(mod, "__file__", None),
    }}
# A directory the finders searched has a cached finder; the preload searches none.
out["finder_for_sdk"] = {sdk!r} + "/plugbox" in sys.path_importer_cache
out["marker"] = getattr(sys.modules["plugbox._errors"], "MARKER", None)
print(json.dumps(out))
"""


def _copy_sdk(tmp_path: Path) -> Path:
    root = tmp_path / "sdk"
    shutil.copytree(Path(SDK_DIR) / "plugbox", root / "plugbox", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([PYTHON, "-I", "-S", "-m", "compileall", "-q", str(root / "plugbox")], check=True)
    return root


def _report(sdk: Path, *flags: str) -> dict[str, Any]:
    code = REPORT.format(sdk=str(sdk))
    argv = [PYTHON, "-I", "-S", *flags, "-c", code]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_preloaded_modules_look_imported(tmp_path: Path) -> None:
    sdk = _copy_sdk(tmp_path)
    fast = _report(sdk)
    # The reference: the ordinary import, the preload being off under a pycache_prefix (the
    # prefix holds no byte code, so import compiles from source: the attributes stay the same).
    slow = _report(sdk, "-X", "pycache_prefix=" + str(tmp_path / "elsewhere"))
    assert fast["finder_for_sdk"] is False, "the preload should have loaded every SDK module"
    assert slow["finder_for_sdk"] is True
    assert "plugbox._serving" in fast  # on the ready path: preloaded too
    for name in ("plugbox._errors", "plugbox._channel", "plugbox._runtime", "__future__", "_json"):
        assert fast[name]["origin"] == slow[name]["origin"]
        assert fast[name]["loader"] == slow[name]["loader"]
        assert fast[name]["package"] == slow[name]["package"]
        assert fast[name]["file"] == slow[name]["file"]
    assert fast["plugbox._errors"]["cached"] == str(sdk / "plugbox/__pycache__/_errors.cpython-311.pyc")


def test_stale_bytecode_is_never_used(tmp_path: Path) -> None:
    sdk = _copy_sdk(tmp_path)
    source = sdk / "plugbox" / "_errors.py"
    # Changed after compiling: the .pyc records the old size (and mtime), so it is stale.
    source.write_text(source.read_text() + "\nMARKER = 'from source'\n")
    report = _report(sdk)
    assert report["marker"] == "from source"
    assert report["finder_for_sdk"] is True  # _errors went through the ordinary import


def test_hash_based_bytecode_is_left_to_import(tmp_path: Path) -> None:
    sdk = _copy_sdk(tmp_path)
    source = sdk / "plugbox" / "_errors.py"
    code = (
        "import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True,"
        " invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)"
    )
    source.write_text(source.read_text() + "\nMARKER = 'hash-based'\n")
    subprocess.run([PYTHON, "-I", "-S", "-c", code, str(source)], check=True)
    report = _report(sdk)
    # Whatever import decides for an unchecked-hash .pyc, the preload did not decide it.
    assert report["finder_for_sdk"] is True
    assert report["marker"] == "hash-based"
