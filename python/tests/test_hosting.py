"""plugbox.hosting against the real binary: a real `plugbox serve`, real sandboxed plugins.

The binary is $PLUGBOX_BIN, else target/debug/plugbox in this repository (`.ci/test` runs
this suite after `cargo test --all-targets`, which builds it). Needs root and /usr/bin/python3,
as plugbox does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from plugbox import CapabilityDenied, HostError, PlugboxError, PluginCrashed
from plugbox.hosting import AsyncEngine, Engine, Event, HostCall, LoadFailed, NotLoaded

REPO = Path(__file__).resolve().parents[2]
PLUGBOX = Path(os.environ.get("PLUGBOX_BIN", REPO / "target" / "debug" / "plugbox"))

pytestmark = [
    pytest.mark.skipif(not PLUGBOX.is_file(), reason=f"no plugbox binary at {PLUGBOX}: run `cargo build` or set PLUGBOX_BIN"),
    pytest.mark.skipif(os.geteuid() != 0, reason="plugbox hosts run as root"),
]

PLUGIN = '''
import os
import plugbox

@plugbox.command
def add(a, b):
    return a + b

@plugbox.command
def text():
    return plugbox.host.call("doc.get_text", part="body")

@plugbox.command
def who():
    return plugbox.host.call("doc.who")

@plugbox.command
def boom():
    return plugbox.host.call("doc.boom")

@plugbox.command
def crash():
    os._exit(3)
'''
TEXT_CAP = '[capabilities]\n"doc.get_text" = {}\n'
CAPS = '[capabilities]\n"doc.get_text" = {}\n"doc.boom" = {}\n"doc.who" = {}\n'


def write_plugin(dir: Path, name: str, main: str, extra: str = "", entry: str = "main.py") -> Path:
    """A plugin directory every uid can read."""
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "plugbox.toml").write_text(
        f'schema = 1\n[plugin]\nname = "{name}"\nversion = "1.0.0"\napi = "^1"\nentry = "{entry}"\n{extra}\n'
    )
    (dir / entry).write_text(main)
    return dir


@pytest.fixture
def world() -> Iterator[Path]:
    """A temporary directory sandboxed plugins may read (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="plugbox-pyhost-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def chmod_world(root: Path) -> None:
    for dirpath, dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)


def engine(world: Path, **kwargs: Any) -> Engine:
    kwargs.setdefault("grant_required", False)
    return Engine(audit=world / "audit.jsonl", state=world / "state", plugbox=PLUGBOX, **kwargs)


def get_text(call: HostCall, part: str) -> str:
    return f"{part} of {call.plugin} via {call.capability}"


def boom(call: HostCall) -> None:
    raise RuntimeError("secret-frame-detail is not sent as a traceback")


def not_json(call: HostCall, part: str) -> float:
    return float("nan")


def deny(call: HostCall) -> None:
    raise CapabilityDenied("not today")


def test_load_call_describe_unload_and_typed_errors(world: Path) -> None:
    plugin = write_plugin(world / "p", "adder", PLUGIN)
    chmod_world(world)
    with engine(world) as e:
        assert e.ready["protocol"] == 1
        loaded = e.load(plugin)
        assert loaded["name"] == "adder"
        assert "add" in e.describe("adder")["commands"]
        assert e.call("adder", "add", a=2, b=3) == 5
        assert e.call("adder", "add", {"a": "x", "b": "y"}) == "xy"
        with pytest.raises(PlugboxError) as raised:
            e.call("adder", "add", a=1, b="x")
        assert raised.value.code == "plugin_error" and "TypeError" in raised.value.message
        assert raised.value.traceback and "add" in raised.value.traceback
        with pytest.raises(LoadFailed):
            e.load(world / "missing")
        assert "adder" in str(e.stats())
        e.unload("adder")
        with pytest.raises(NotLoaded) as gone:
            e.call("adder", "add", a=1, b=2)
        assert gone.value.code == "not_loaded"


def test_host_capabilities_answered_by_python_callables(world: Path) -> None:
    plugin = write_plugin(world / "p", "caps", PLUGIN, CAPS)
    chmod_world(world)
    caps = {"doc.get_text": not_json, "doc.boom": boom, "doc.who": deny}
    with engine(world, capabilities=caps) as e:
        e.load(plugin)
        # A result that is not JSON is a host_error, not a line serve cannot read.
        with pytest.raises(PlugboxError) as nan:
            e.call("caps", "text")
        assert "HostError" in nan.value.message and "JSON" in nan.value.message, nan.value
    caps = {"doc.get_text": get_text, "doc.boom": boom, "doc.who": deny}
    with engine(world, capabilities=caps) as e:
        e.load(plugin)
        assert e.call("caps", "text") == "body of caps via doc.get_text"
        # Any other exception: host_error with the message, never the host's traceback.
        with pytest.raises(PlugboxError) as raised:
            e.call("caps", "boom")
        assert raised.value.code == "plugin_error"
        assert "HostError" in raised.value.message and "RuntimeError: secret-frame-detail" in raised.value.message
        assert "test_hosting.py" not in (raised.value.traceback or "") + raised.value.message
        # A PlugboxError keeps its code: the plugin sees CapabilityDenied.
        with pytest.raises(PlugboxError) as denied:
            e.call("caps", "who")
        assert "CapabilityDenied" in denied.value.message and "not today" in denied.value.message


def test_events_see_a_crash_and_the_restart(world: Path) -> None:
    plugin = write_plugin(world / "p", "crasher", PLUGIN)
    chmod_world(world)
    seen: List[Event] = []
    restarted = threading.Event()

    def on_event(event: Event) -> None:
        seen.append(event)
        if event.event == "restarted":
            restarted.set()

    with engine(world, on_event=on_event) as e:
        e.load(plugin)
        stream = e.events()  # subscribed here, before the crash
        with pytest.raises(PluginCrashed):
            e.call("crasher", "crash")
        assert restarted.wait(60), [ev.event for ev in seen]
        streamed = []
        for ev in stream:
            streamed.append(ev.event)
            if ev.event == "restarted":
                break
        assert "exited" in streamed, streamed
        assert e.call("crasher", "add", a=1, b=1) == 2
    exited = [ev for ev in seen if ev.event == "exited" and ev.plugin == "crasher"]
    assert exited and exited[0].detail.get("exit_code") == 3, seen
    assert all(isinstance(ev.seq, int) for ev in seen)
    # Shutdown's own events reached the callback before close() returned.
    assert any(ev.event == "stopped" and ev.instance == "-" for ev in seen), [ev.event for ev in seen]


def test_leaving_the_context_seals_the_log(world: Path) -> None:
    plugin = write_plugin(world / "p", "sealer", PLUGIN)
    chmod_world(world)
    with engine(world) as e:
        e.load(plugin)
        assert e.call("sealer", "add", a=1, b=2) == 3
    verified = subprocess.run([str(PLUGBOX), "audit", "verify", str(world / "audit.jsonl")], capture_output=True, text=True)
    assert verified.returncode == 0, verified
    assert "sealed" in (verified.stdout + verified.stderr).lower()
    with pytest.raises(PlugboxError):
        e.call("sealer", "add", a=1, b=2)  # closed


def test_several_threads_call_at_once(world: Path) -> None:
    plugin = write_plugin(world / "p", "busy", PLUGIN, TEXT_CAP)
    chmod_world(world)
    results: Dict[int, List[Any]] = {}
    errors: List[BaseException] = []
    with engine(world, capabilities={"doc.get_text": get_text}) as e:
        e.load(plugin)

        def worker(n: int) -> None:
            try:
                results[n] = [e.call("busy", "add", a=n, b=i) for i in range(25)]
                results[n].append(e.call("busy", "text"))
            except BaseException as exc:  # asserted below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors, errors
    for n in range(8):
        assert results[n][:25] == [n + i for i in range(25)]
        assert results[n][25] == "body of busy via doc.get_text"


def test_the_asyncio_api(world: Path) -> None:
    plugin = write_plugin(world / "p", "aio", PLUGIN, TEXT_CAP)
    chmod_world(world)

    async def get_text_async(call: HostCall, part: str) -> str:
        await asyncio.sleep(0)
        return f"async {part}"

    async def main() -> List[Any]:
        async with AsyncEngine(
            audit=world / "audit.jsonl", state=world / "state", plugbox=PLUGBOX,
            grant_required=False, capabilities={"doc.get_text": get_text_async},
        ) as e:
            await e.load(plugin)
            sums = await asyncio.gather(*(e.call("aio", "add", a=i, b=i) for i in range(20)))
            text = await e.call("aio", "text")
            with pytest.raises(NotLoaded):
                await e.describe("nope")
            stream = e.events()
            with pytest.raises(PluginCrashed):
                await e.call("aio", "crash")

            async def until_restarted() -> List[str]:
                names = []
                async for ev in stream:
                    names.append(ev.event)
                    if ev.event == "restarted":
                        return names
                return names

            seen = await asyncio.wait_for(until_restarted(), 60)
            assert "exited" in seen and seen[-1] == "restarted", seen
            return [sums, text]

    sums, text = asyncio.run(main())
    assert sums == [2 * i for i in range(20)]
    assert text == "async body"
    verified = subprocess.run([str(PLUGBOX), "audit", "verify", str(world / "audit.jsonl")], capture_output=True)
    assert verified.returncode == 0


def test_serve_that_cannot_start_is_an_error(world: Path) -> None:
    with pytest.raises(PlugboxError):
        Engine(audit=world / "a.jsonl", state=world / "s", plugbox=PLUGBOX, extra_args=["--no-such-flag"]).start()


MARKER_PLUGIN = '''
import os
import plugbox

MARKER = {marker!r}
try:  # import time: a host that imports this module leaves the marker behind
    with open(MARKER, "w") as f:
        f.write("imported by pid %d uid %d" % (os.getpid(), os.getuid()))
    WROTE = "written"
except OSError as e:
    WROTE = type(e).__name__

@plugbox.command
def probe():
    return {{"uid": os.getuid(), "marker": WROTE}}
'''


def build_site(world: Path, marker: Path) -> Path:
    """A site directory: a distribution declaring `[myapp.plugins]` entry points (and a decoy
    in plugbox's own group), and a namespace package myapp/plugins/<name>/. Every module,
    the entries and each package's __init__.py, writes the marker when imported."""
    site = world / "site"
    code = MARKER_PLUGIN.format(marker=str(marker))
    for pkg, name in [("ep_plugin", "ep-plugin"), ("decoy_plugin", "decoy")]:
        write_plugin(site / pkg, name, code)
        (site / pkg / "__init__.py").write_text(code)
    dist = site / "myapp_ep-1.0.dist-info"
    dist.mkdir()
    (dist / "entry_points.txt").write_text("[myapp.plugins]\nep = ep_plugin.main:probe\n")
    decoy = site / "decoy-1.0.dist-info"
    decoy.mkdir()
    (decoy / "entry_points.txt").write_text("[plugbox.plugins]\ndecoy = decoy_plugin\n")
    ns = site / "myapp" / "plugins" / "ns_plugin"
    write_plugin(ns, "ns-plugin", code)
    (ns / "__init__.py").write_text(code)
    (site / "myapp" / "__init__.py").write_text(code)
    chmod_world(world)
    return site


def test_app_specific_discovery_never_imports_plugin_code(world: Path) -> None:
    markers = world / "markers"
    markers.mkdir()
    marker = markers / "imported"
    site = build_site(world, marker)
    chmod_world(world)
    with engine(world) as e:
        found = e.discover(group="myapp.plugins", namespace="myapp.plugins", sites=[site])
        by_name = {f.name: f for f in found}
        assert set(by_name) == {"ep-plugin", "ns-plugin"}, found
        assert by_name["ep-plugin"].route == "entry-point"
        assert by_name["ep-plugin"].location == str(site / "ep_plugin")
        assert by_name["ns-plugin"].route == "namespace"
        assert by_name["ns-plugin"].location == str(site / "myapp" / "plugins" / "ns_plugin")
        assert all(f.error is None for f in found)
        # plugbox's own group and namespace do not see the application's plugins.
        own = e.discover(sites=[site])
        assert [f.name for f in own] == ["decoy"], own
        # Discovery imported nothing: not in this process, not in any other.
        assert not marker.exists()
        assert not {"ep_plugin", "decoy_plugin", "myapp", "ns_plugin"} & set(sys.modules)
        # Loading a found plugin runs its code only in the sandbox: as the sandbox uid, whose
        # import-time write of the marker is refused there, so the marker still never exists.
        e.load(by_name["ns-plugin"].location)
        probe = e.call("ns-plugin", "probe")
        assert probe["uid"] != 0 and probe["marker"] == "PermissionError", probe
        e.load(by_name["ep-plugin"].location)
        assert e.call("ep-plugin", "probe")["marker"] == "PermissionError"
    assert not marker.exists()
    assert os.listdir(markers) == []


def test_discovery_refuses_names_that_are_not_dotted_identifiers(world: Path) -> None:
    with engine(world) as e:
        for bad in ["../etc", "myapp/plugins", "my-app", "a..b", ""]:
            with pytest.raises(PlugboxError) as raised:
                e.discover(group="ok", namespace=bad, sites=[world])
            assert "dotted identifier" in raised.value.message, bad
        with pytest.raises(PlugboxError):
            e.discover(group="[x]", namespace="ok", sites=[world])
