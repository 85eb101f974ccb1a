"""The runtime end to end: a real `/usr/bin/python3 -I -S` subprocess, started as the engine does."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from fakehost import PYTHON, SDK_DIR, PluginProcess

PLUGIN = """
import sys
import plugbox
import helper  # next to main.py: the entry's directory is first on sys.path

print("stdout at import: must not reach the channel")
print("stderr at import", file=sys.stderr)

@plugbox.command
def count(text):
    print("stdout in a command", text)
    return len(text.split())

@plugbox.command(name="whoami")
def whoami():
    return {"module": __name__, "file": __file__, "helper": helper.VALUE, "path0": sys.path[0]}

@plugbox.command
def lookup(key):
    plugbox.log.info("looking up", key=key)
    try:
        value = plugbox.host.call("kv.get", key=key)
    except plugbox.CapabilityDenied as exc:
        return {"denied": exc.message}
    return {"value": value}

@plugbox.command
def upper(data):
    return data.upper()

@plugbox.command
def block():
    import time
    time.sleep(60)
"""


def write_plugin(tmp_path: Path, source: str = PLUGIN) -> Path:
    (tmp_path / "helper.py").write_text("VALUE = 42\n")
    entry = tmp_path / "main.py"
    entry.write_text(textwrap.dedent(source))
    return entry


@pytest.fixture
def plugin(tmp_path: Path):  # type: ignore[no-untyped-def]
    process = PluginProcess(write_plugin(tmp_path))
    yield process
    process.kill()


def test_handshake_call_and_shutdown(plugin: PluginProcess, tmp_path: Path) -> None:
    hello = plugin.host.handshake(capabilities=("log", "kv.get"))
    schemas = hello.pop("schemas")
    assert schemas["count"]["args"]["required"] == ["text"]  # plugbox._schema, tests/test_schema.py
    assert hello == {
        "type": "hello",
        "protocol": 1,
        "plugin": {"name": "demo", "version": "1.0.0"},
        "commands": ["count", "whoami", "lookup", "upper", "block"],
    }
    plugin.host.call(1, "count", text="a b c")
    assert plugin.host.recv_header() == {"type": "result", "id": 1, "result": 3}
    plugin.host.call(2, "whoami")
    info = plugin.host.recv_header()["result"]
    assert info == {
        "module": "__plugbox_plugin__",
        "file": str(tmp_path / "main.py"),
        "helper": 42,
        "path0": str(tmp_path),
    }
    plugin.host.call(3, "upper", body=b"bytes\x00in", body_name="data")
    assert plugin.host.recv() == ({"type": "result", "id": 3, "body": True}, b"BYTES\x00IN")
    plugin.host.call(4, "plugbox.ping")
    assert plugin.host.recv_header() == {"type": "result", "id": 4, "result": "pong"}
    plugin.host.send({"type": "shutdown"})
    status, out, err = plugin.finish()
    assert status == 0, err
    # print() went to stdout, never into the channel (every frame above decoded strictly)
    assert "stdout at import: must not reach the channel" in out
    assert "stdout in a command a b c" in out
    assert "stderr at import" in err


def test_plugin_calls_the_host_and_logs(plugin: PluginProcess) -> None:
    plugin.host.handshake(capabilities=("log", "kv.get"))
    plugin.host.call(1, "lookup", key="colour")
    log = plugin.host.recv_header()
    assert log == {
        "type": "call",
        "id": 1,
        "method": "log",
        "args": {"level": "info", "message": "looking up", "fields": {"key": "colour"}},
        "cause": 1,  # made while running the host's call 1
    }
    get = plugin.host.recv_header()
    assert get == {"type": "call", "id": 2, "method": "kv.get", "args": {"key": "colour"}, "cause": 1}
    plugin.host.send({"type": "result", "id": 2, "result": "blue"})
    assert plugin.host.recv_header() == {"type": "result", "id": 1, "result": {"value": "blue"}}
    plugin.host.send({"type": "result", "id": 1, "result": None})  # the log's reply, late
    plugin.host.send({"type": "shutdown"})
    assert plugin.finish()[0] == 0


def test_an_ungranted_call_inside_the_plugin_is_sent_and_the_hosts_denial_raised(plugin: PluginProcess) -> None:
    plugin.host.handshake(capabilities=())
    plugin.host.call(1, "lookup", key="k")
    attempt = plugin.host.recv_header()  # the attempt reaches the host, whose gate records it
    assert attempt == {"type": "call", "id": 1, "method": "kv.get", "args": {"key": "k"}, "cause": 1}
    denial = {"code": "denied", "message": 'capability "kv.get" is not granted'}
    plugin.host.send({"type": "error", "id": 1, "error": denial})
    reply = plugin.host.recv_header()
    assert reply["result"] == {"denied": 'capability "kv.get" is not granted'}
    plugin.host.send({"type": "shutdown"})
    status, _, err = plugin.finish()
    assert status == 0
    assert "[info] looking up key='k'" in err  # log not granted: stderr, no call


def test_exception_in_command_reaches_host(tmp_path: Path) -> None:
    process = PluginProcess(
        write_plugin(
            tmp_path, "import plugbox\n@plugbox.command\ndef boom():\n    raise ValueError('bad input')\n"
        )
    )
    try:
        process.host.handshake()
        process.host.call(1, "boom")
        error = process.host.recv_header()["error"]
        assert error["code"] == "plugin_error" and error["message"] == "ValueError: bad input"
        assert "raise ValueError('bad input')" in error["traceback"]
        process.host.call(2, "missing")
        assert process.host.recv_header()["error"]["code"] == "invalid"
        process.host.send({"type": "shutdown"})
        assert process.finish()[0] == 0
    finally:
        process.kill()


def test_shutdown_abandons_running_commands(plugin: PluginProcess) -> None:
    plugin.host.handshake()
    plugin.host.call(1, "block")
    plugin.host.send({"type": "shutdown"})
    status, _, _ = plugin.finish(timeout=10)
    assert status == 0


def test_eof_exits_0(plugin: PluginProcess) -> None:
    plugin.host.handshake()
    plugin.host.sock.close()
    assert plugin.proc.wait(10) == 0


def test_refuse_exits_3(plugin: PluginProcess) -> None:
    plugin.host.recv_header()
    plugin.host.send({"type": "refuse", "error": {"code": "invalid", "message": "version mismatch"}})
    status, _, err = plugin.finish()
    assert status == 3
    assert "the host refused plugin 'demo' '1.0.0': version mismatch [invalid]" in err


def test_protocol_violation_exits_4(plugin: PluginProcess) -> None:
    plugin.host.handshake()
    plugin.host.send({"type": "result", "id": 77, "result": 1})
    status, _, err = plugin.finish()
    assert status == 4
    assert "protocol violation by the host" in err and "call id 77" in err


def test_garbage_instead_of_welcome_exits_4(plugin: PluginProcess) -> None:
    plugin.host.recv_header()
    plugin.host.send_raw(b"\x00\x00\x00\x06\x00\x00\x00\x02[]")
    status, _, err = plugin.finish()
    assert status == 4
    assert "handshake failed" in err and "not an object" in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "missing environment variable(s) PLUGBOX_FD, PLUGBOX_PLUGIN_NAME, PLUGBOX_PLUGIN_VERSION"),
        (
            {"PLUGBOX_FD": "5", "PLUGBOX_PLUGIN_NAME": "x"},
            "missing environment variable(s) PLUGBOX_PLUGIN_VERSION",
        ),
        (
            {"PLUGBOX_FD": "1", "PLUGBOX_PLUGIN_NAME": "x", "PLUGBOX_PLUGIN_VERSION": "1"},
            "PLUGBOX_FD must be",
        ),
        (
            {"PLUGBOX_FD": "x5", "PLUGBOX_PLUGIN_NAME": "x", "PLUGBOX_PLUGIN_VERSION": "1"},
            "PLUGBOX_FD must be",
        ),
    ],
)
def test_missing_environment_exits_2(tmp_path: Path, env: dict[str, str], message: str) -> None:
    process = PluginProcess(write_plugin(tmp_path), env=env)
    status, _, err = process.finish()
    assert status == 2
    assert message in err


def test_failing_entry_exits_1_with_traceback(tmp_path: Path) -> None:
    process = PluginProcess(write_plugin(tmp_path, "import plugbox\nplugbox.host.call('kv.get', key='k')\n"))
    status, _, err = process.finish()
    assert status == 1
    assert "loading" in err and "ProtocolError" in err and "not connected to a host" in err


def test_sdk_import_stays_light() -> None:
    code = (
        f"import sys; sys.path[:0]=[{SDK_DIR!r}]; before=set(sys.modules); import plugbox._runtime; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    loaded = set(
        subprocess.run(
            [PYTHON, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    heavy = {
        "socket",
        "threading",
        "json",
        "typing",
        "asyncio",
        "dataclasses",
        "re",
        "os",
        "traceback",
        "enum",
    }
    assert loaded & heavy == set()
    # _socket: recvmsg, to receive the memfds of bulk bodies (protocol.md §2.1).
    assert {m for m in loaded if not m.startswith("plugbox")} <= {"__future__", "_json", "_socket"}
