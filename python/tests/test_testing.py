"""plugbox.testing: the fake host a plugin's unit tests use (stubs, recorded calls, denials)."""

from __future__ import annotations

import math
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import plugbox
from plugbox import _channel
from plugbox._commands import REGISTRY

# As a plugin's own tests do. Imported by pytest (which rewrites its asserts), not here: a
# module-level import of plugbox.testing would come first and make pytest warn.
pytest_plugins = ["plugbox.testing"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plugbox.testing import FakeHost


def new_host() -> FakeHost:
    from plugbox.testing import FakeHost

    return FakeHost()

MANIFEST = """\
schema = 1

[plugin]
name = "{name}"
version = "0.1.0"
api = "^1"
entry = "main.py"

[capabilities]
"log" = {{}}
"doc.get_text" = {{ reason = "reads the document" }}
"doc.set_text" = {{ reason = "rewrites it" }}
"""

ENTRY = '''
from __future__ import annotations

import dataclasses
import threading

import plugbox


@dataclasses.dataclass
class Counted:  # dataclasses look their module up in sys.modules
    changed: int


@plugbox.command
def apply() -> int:
    text = plugbox.host.call("doc.get_text")
    new = text.title()
    plugbox.host.call("doc.set_text", text=new)
    plugbox.log.info("rewrote", chars=len(new))
    return Counted(sum(a != b for a, b in zip(text, new))).changed


@plugbox.command
def steal() -> str:
    return plugbox.host.call("secrets.read", name="root")


@plugbox.command
def echo(**args):
    return args


@plugbox.command
def from_thread() -> str:
    out = []
    worker = threading.Thread(target=lambda: out.append(plugbox.host.call("doc.get_text")))
    worker.start()
    worker.join()
    return out[0]
'''


def make_plugin(root: Path, name: str = "title-case", entry: str = ENTRY) -> Path:
    plugin = root / name
    plugin.mkdir()
    (plugin / "plugbox.toml").write_text(MANIFEST.format(name=name))
    (plugin / "main.py").write_text(textwrap.dedent(entry))
    return plugin


def test_a_stubbed_value_answers_and_the_call_is_recorded(plugbox_host: FakeHost, tmp_path: Path) -> None:
    plugbox_host.load(make_plugin(tmp_path))
    plugbox_host.stub("doc.get_text", "hello world")
    plugbox_host.stub("doc.set_text")
    assert plugbox_host.call("apply") == 2
    assert [c.method for c in plugbox_host.calls] == ["doc.get_text", "doc.set_text"]
    (set_text,) = plugbox_host.calls_to("doc.set_text")
    assert set_text.args == {"text": "Hello World"}
    assert set_text.stubbed and set_text.result is None and set_text.error is None


def test_an_unstubbed_capability_is_denied_as_the_host_denies_it(plugbox_host: FakeHost, tmp_path: Path) -> None:
    plugbox_host.load(make_plugin(tmp_path))
    with pytest.raises(plugbox.CapabilityDenied) as raised:
        plugbox_host.call("steal")
    assert raised.value.code == "denied"
    assert raised.value.method == "secrets.read"
    assert raised.value.message == 'capability "secrets.read" is not granted'
    (attempt,) = plugbox_host.calls
    assert attempt.method == "secrets.read" and attempt.args == {"name": "root"}
    assert not attempt.stubbed and isinstance(attempt.error, plugbox.CapabilityDenied)


def test_a_stub_the_manifest_does_not_request_is_refused(plugbox_host: FakeHost, tmp_path: Path) -> None:
    plugbox_host.load(make_plugin(tmp_path))
    with pytest.raises(ValueError, match=r"cannot stub 'secrets.read': the manifest of 'title-case'"):
        plugbox_host.stub("secrets.read", "hunter2")
    with pytest.raises(plugbox.CapabilityDenied):
        plugbox_host.call("steal")


def test_a_stub_given_before_load_is_checked_at_load(tmp_path: Path) -> None:
    with new_host() as host:
        host.stub("secrets.read", "hunter2")
        with pytest.raises(ValueError, match="does not request it"):
            host.load(make_plugin(tmp_path))


def test_a_callable_stub_gets_the_arguments_and_bytes_travel_as_the_body(plugbox_host: FakeHost) -> None:
    seen = []

    def upload(name: str, data: bytes) -> bytes:
        seen.append((name, data))
        return data[::-1]

    plugbox_host.stub("blob.put", upload)
    assert plugbox.host.call("blob.put", name="x", data=b"\x00\x01\xff") == b"\xff\x01\x00"
    assert seen == [("x", b"\x00\x01\xff")]
    assert plugbox_host.calls[0].args == {"name": "x", "data": b"\x00\x01\xff"}


def test_stub_errors_reach_the_plugin_as_host_errors_would(plugbox_host: FakeHost) -> None:
    def out_of_scope(path: str) -> None:
        raise plugbox.CapabilityDenied(f"{path} is outside the granted roots")

    def broken() -> None:
        raise KeyError("oops")

    plugbox_host.stub("fs.read", out_of_scope)
    plugbox_host.stub("doc.get_text", broken)
    with pytest.raises(plugbox.CapabilityDenied, match="outside the granted roots"):
        plugbox.host.call("fs.read", path="../etc/passwd")
    with pytest.raises(plugbox.HostError) as raised:
        plugbox.host.call("doc.get_text")
    assert "KeyError" in raised.value.message
    assert isinstance(plugbox_host.calls_to("doc.get_text")[0].exception, KeyError)


def test_values_cross_strict_json_both_ways(plugbox_host: FakeHost, tmp_path: Path) -> None:
    plugbox_host.load(make_plugin(tmp_path))
    assert plugbox_host.call("echo", pair=(1, 2)) == {"pair": [1, 2]}
    with pytest.raises(plugbox.InvalidArgument, match="cannot be sent as JSON"):
        plugbox_host.call("echo", x=math.nan)
    plugbox_host.stub("doc.get_text", {1, 2})
    with pytest.raises(plugbox.HostError, match="not JSON"):
        plugbox.host.call("doc.get_text")


def test_a_result_json_cannot_hold_is_a_plugin_error(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path, entry="import plugbox\n\n@plugbox.command\ndef bad():\n    return {1}\n")
    with new_host() as host:
        host.load(plugin)
        with pytest.raises(plugbox.PlugboxError, match="not JSON-serialisable") as raised:
            host.call("bad")
        assert raised.value.code == "plugin_error"


def test_unknown_commands_and_command_exceptions(plugbox_host: FakeHost, tmp_path: Path) -> None:
    plugbox_host.load(make_plugin(tmp_path))
    assert plugbox_host.commands == ["apply", "steal", "echo", "from_thread"]
    with pytest.raises(plugbox.InvalidArgument, match="title-case exports no command 'nope'"):
        plugbox_host.call("nope")
    with pytest.raises(TypeError):  # the command's own exception, unchanged
        plugbox_host.call("apply", unexpected=1)


def test_log_lines_are_calls_when_log_is_stubbed_else_stderr(
    plugbox_host: FakeHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugbox_host.load(make_plugin(tmp_path))
    plugbox_host.stub("doc.get_text", "a b")
    plugbox_host.stub("doc.set_text")
    plugbox_host.call("apply")
    assert "[info] rewrote chars=3" in capsys.readouterr().err
    plugbox_host.stub("log")
    plugbox_host.call("apply")
    (line,) = plugbox_host.calls_to("log")
    assert line.args == {"level": "info", "message": "rewrote", "fields": {"chars": 3}}


def test_calls_from_a_commands_own_thread_are_served(plugbox_host: FakeHost, tmp_path: Path) -> None:
    plugbox_host.load(make_plugin(tmp_path))
    plugbox_host.stub("doc.get_text", lambda: threading.current_thread().name)
    assert plugbox_host.call("from_thread") != threading.current_thread().name


def test_loading_twice_leaves_the_global_registry_alone(tmp_path: Path) -> None:
    before = REGISTRY.names()
    plugin = make_plugin(tmp_path)
    for _ in range(2):
        with new_host() as host:
            host.load(plugin)
            assert "apply" in host.commands
    assert REGISTRY.names() == before


def test_without_load_call_runs_commands_registered_by_import(plugbox_host: FakeHost) -> None:
    @plugbox.command(name="testing-direct")
    def direct(n: int) -> int:
        return n + 1

    try:
        assert plugbox_host.call("testing-direct", n=1) == 2
    finally:
        REGISTRY.remove("testing-direct")


def test_close_restores_the_previous_state(tmp_path: Path) -> None:
    assert _channel.active() is None
    plugin = make_plugin(tmp_path)
    host = new_host()
    host.load(plugin)
    assert str(plugin) in sys.path
    assert "__plugbox_test_title_case__" in sys.modules
    host.close()
    assert "__plugbox_test_title_case__" not in sys.modules
    assert _channel.active() is None
    assert str(plugin) not in sys.path
    with pytest.raises(plugbox.ProtocolError, match="not connected to a host"):
        plugbox.host.call("doc.get_text")
