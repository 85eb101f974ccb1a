"""Raw protocol access for hostile test plugins: frames written by hand, no SDK.

A hostile plugin's entry file imports this at module import time (before the SDK runtime would
say hello), takes over the channel, and never returns: it finishes with os._exit.
"""
import json
import os
import struct

FD = int(os.environ["PLUGBOX_FD"])
NAME = os.environ["PLUGBOX_PLUGIN_NAME"]
VERSION = os.environ["PLUGBOX_PLUGIN_VERSION"]


def write_all(data):
    view = memoryview(data)
    while view:
        n = os.write(FD, view)
        view = view[n:]


def frame(header, body=b""):
    if not isinstance(header, bytes):
        header = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">II", 4 + len(header) + len(body), len(header)) + header + body


def send(header, body=b""):
    write_all(frame(header, body))


def read_exact(n):
    out = b""
    while len(out) < n:
        chunk = os.read(FD, n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def recv():
    length, header_len = struct.unpack(">II", read_exact(8))
    payload = read_exact(length - 4)
    return json.loads(payload[:header_len]), payload[header_len:]


def handshake(commands=("report",)):
    send({"type": "hello", "protocol": 1, "plugin": {"name": NAME, "version": VERSION}, "commands": list(commands)})
    welcome, _ = recv()
    assert welcome["type"] == "welcome", welcome
    # The host's first health probe: the instance is ready once it is answered.
    ping, _ = recv()
    assert ping["type"] == "call" and ping["method"] == "plugbox.ping", ping
    send({"type": "result", "id": ping["id"], "result": "pong"})
    return welcome


def call(id_, method, **args):
    send({"type": "call", "id": id_, "method": method, "args": args})


_held = []  # host frames that arrived while waiting for replies


def replies_until(ids):
    """Reads frames until every id in `ids` has a result or error; returns {id: header}.
    Host calls that arrive meanwhile are kept for serve_report."""
    got = {}
    want = set(ids)
    while not want <= set(got):
        header, body = recv()
        if header["type"] in ("result", "error"):
            got[header["id"]] = dict(header, body_len=len(body))
        else:
            _held.append(header)
    return got


def serve_report(observations):
    """Answers host calls to `report` with `observations` until shutdown or EOF."""
    try:
        while True:
            header = _held.pop(0) if _held else recv()[0]
            if header["type"] == "call":
                send({"type": "result", "id": header["id"], "result": observations})
            elif header["type"] == "shutdown":
                break
    except EOFError:
        pass
    os._exit(0)
