"""The source-only import hook: bytecode in ``__pycache__`` beneath the plugin directory never
runs, and nothing outside it changes. Each case runs a real ``/usr/bin/python3 -I -S``."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import subprocess
import textwrap
from pathlib import Path

import pytest
from fakehost import PYTHON, SDK_DIR

from plugbox._sourceonly import beneath, normalise


def implant_unchecked_pyc(module: Path, evil_source: str) -> Path:
    """Compile ``evil_source`` as ``module``'s unchecked-hash pyc in ``__pycache__`` (what an
    attacker with write access to the directory can do), then put the real source back with its
    original times. Returns the pyc."""
    real, times = module.read_bytes(), os.stat(module)
    module.write_text(evil_source)
    pyc = Path(importlib.util.cache_from_source(str(module)))
    py_compile.compile(
        str(module), cfile=str(pyc), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    module.write_bytes(real)
    os.utime(module, ns=(times.st_atime_ns, times.st_mtime_ns))
    return pyc


def run_with_hook(plugin_dir: Path, body: str, extra_path: Path | None = None) -> str:
    """Run ``body`` in a fresh ``-I -S`` interpreter after installing the hook for ``plugin_dir``
    (on sys.path, as the runtime puts the entry's directory); returns its stdout."""
    code = (
        f"import sys; sys.path[:0]=[{SDK_DIR!r}]; from plugbox import _sourceonly; "
        f"_sourceonly.install({str(plugin_dir)!r}); sys.path.insert(0, {str(plugin_dir)!r}); "
        + (f"sys.path.append({str(extra_path)!r}); " if extra_path else "")
        + body
    )
    done = subprocess.run([PYTHON, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_pinned_pyc_attack_is_compiled_from_source(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("VALUE = 'source'\n")
    pyc = implant_unchecked_pyc(tmp_path / "helper.py", "VALUE = 'implanted bytecode'\n")
    # Without the hook, the interpreter runs the implanted bytecode: the attack is real.
    plain = subprocess.run(
        [PYTHON, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import helper; print(helper.VALUE)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert plain.stdout.strip() == "implanted bytecode"
    assert run_with_hook(tmp_path, "import helper; print(helper.VALUE)") == "source"
    assert pyc.exists()


def test_packages_and_submodules_beneath_the_plugin_are_source_only(tmp_path: Path) -> None:
    package = tmp_path / "vendor" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("VALUE = 'source'\n")
    implant_unchecked_pyc(package / "mod.py", "VALUE = 'implanted bytecode'\n")
    body = f"sys.path.append({str(tmp_path / 'vendor' / '..' / 'vendor')!r}); import pkg.mod; print(pkg.mod.VALUE)"
    assert run_with_hook(tmp_path, body) == "source"


def test_no_bytecode_is_written_beneath_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    assert run_with_hook(tmp_path, "import helper; print(type(helper.__loader__).__name__)") == "SourceOnlyLoader"
    assert not (tmp_path / "__pycache__").exists()


def test_paths_outside_the_plugin_keep_their_cached_bytecode(tmp_path: Path) -> None:
    plugin, outside = tmp_path / "plugin", tmp_path / "plugin-sibling"
    plugin.mkdir()
    outside.mkdir()
    (outside / "installed.py").write_text("VALUE = 'source'\n")
    implant_unchecked_pyc(outside / "installed.py", "VALUE = 'cached bytecode'\n")
    body = "import installed, json; print(installed.VALUE, type(json.__loader__).__name__, json.__cached__ is not None)"
    assert run_with_hook(plugin, body, extra_path=outside) == "cached bytecode SourceFileLoader True"


def test_sourceless_bytecode_in_the_tree_itself_stays_importable(tmp_path: Path) -> None:
    # A .pyc shipped in the tree (not in __pycache__) is a digested file: as pinned as a source.
    source = tmp_path / "shipped_src.py"
    source.write_text("VALUE = 'shipped'\n")
    py_compile.compile(str(source), cfile=str(tmp_path / "shipped.pyc"))
    source.unlink()
    assert run_with_hook(tmp_path, "import shipped; print(shipped.VALUE)") == "shipped"


@pytest.mark.parametrize(
    ("path", "root", "inside"),
    [
        ("/p/plugin", "/p/plugin", True),
        ("/p/plugin/sub/./x", "/p/plugin", True),
        ("/p/plugin//sub", "/p/plugin/", True),
        ("/p/plugin-sibling", "/p/plugin", False),
        ("/p/plugin/../other", "/p/plugin", False),
        ("/p", "/p/plugin", False),
    ],
)
def test_beneath_is_decided_on_whole_components(path: str, root: str, inside: bool) -> None:
    assert beneath(normalise(path), normalise(root)) is inside


def test_relative_paths_are_taken_against_the_working_directory() -> None:
    assert normalise("a/../b") == normalise(os.getcwd()) + "/b" or os.getcwd() == "/"
    assert normalise("") == normalise(os.getcwd())


def test_entry_modules_import_source_only_end_to_end(tmp_path: Path) -> None:
    from fakehost import PluginProcess

    (tmp_path / "helper.py").write_text("VALUE = 'source'\n")
    implant_unchecked_pyc(tmp_path / "helper.py", "VALUE = 'implanted bytecode'\n")
    entry = tmp_path / "main.py"
    entry.write_text(
        textwrap.dedent(
            """
            import plugbox, helper
            @plugbox.command
            def value():
                return helper.VALUE
            """
        )
    )
    process = PluginProcess(entry)
    try:
        process.host.handshake()
        process.host.call(1, "value")
        assert process.host.recv_header() == {"type": "result", "id": 1, "result": "source"}
    finally:
        process.kill()
