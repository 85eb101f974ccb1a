"""Bulk bodies in the SDK (protocol.md §2.1): memfds the host passes, read without a copy, and
result buffers the SDK asks for and fills."""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import socket
import struct
from typing import Any

import pytest

from plugbox._bulk import WINDOW
from plugbox._frames import BULK_THRESHOLD

from conftest import Session

SEALS_FIXED = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
SEALS_IMMUTABLE = SEALS_FIXED | fcntl.F_SEAL_WRITE


def memfd(data: bytes, size: int | None = None, seals: int = SEALS_IMMUTABLE) -> int:
    fd = os.memfd_create("test", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    os.ftruncate(fd, len(data) if size is None else size)
    if data:
        os.pwrite(fd, data, 0)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def send_with_fd(session: Session, header: dict[str, Any], fd: int) -> None:
    raw = json.dumps(header, separators=(",", ":")).encode()
    head = struct.pack(">II", 4 + len(raw), len(raw)) + raw
    session.host.sock.sendmsg([head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
    os.close(fd)


def serve_buffer(session: Session) -> tuple[int, int, int]:
    """Answer the plugin's plugbox.buffer call as the host does; returns (call, size, our fd)."""
    header = session.host.recv_header()
    assert header["method"] == "plugbox.buffer", header
    size = header["args"]["len"]
    fd = memfd(b"", size, SEALS_FIXED)
    send_with_fd(session, {"type": "result", "id": header["id"], "body": True, "bulk": size}, os.dup(fd))
    return header["args"]["call"], size, fd


def call_bulk(session: Session, call_id: int, method: str, data: bytes) -> None:
    header = {"type": "call", "id": call_id, "method": method, "args": {}, "body": "data", "bulk": len(data)}
    send_with_fd(session, header, memfd(data))


def test_a_bulk_argument_is_a_read_only_view_and_a_bulk_result_fills_the_buffer(session: Session) -> None:
    session.registry.add("kind", lambda data: [type(data).__name__, data.readonly, len(data)])
    session.registry.add("echo", lambda data: data)
    session.connect()
    data = bytes(range(256)) * ((WINDOW + BULK_THRESHOLD) // 256 + 3)  # more than one window
    call_bulk(session, 1, "kind", data)
    assert session.host.recv_header() == {"type": "result", "id": 1, "result": ["memoryview", True, len(data)]}
    call_bulk(session, 2, "echo", data)
    call, size, fd = serve_buffer(session)
    assert (call, size) == (2, len(data))
    reply = session.host.recv_header(timeout=30)
    assert reply == {"type": "result", "id": 2, "body": True, "bulk": len(data)}
    assert os.pread(fd, size, 0) == data
    os.close(fd)
    session.host.call(3, "plugbox.ping")
    assert session.host.recv_header() == {"type": "result", "id": 3, "result": "pong"}


def test_a_refused_buffer_is_a_too_large_reply_and_serving_goes_on(session: Session) -> None:
    session.registry.add("big", lambda: b"x" * (BULK_THRESHOLD + 1))
    session.connect()
    session.host.call(1, "big")
    header = session.host.recv_header()
    assert header["method"] == "plugbox.buffer"
    error = {"code": "too_large", "message": "body too large (limits.memory_mib)"}
    session.host.send({"type": "error", "id": header["id"], "error": error})
    reply = session.host.recv_header()
    assert reply["id"] == 1 and reply["error"]["code"] == "too_large", reply
    session.host.call(2, "plugbox.ping")
    assert session.host.recv_header() == {"type": "result", "id": 2, "result": "pong"}


@pytest.mark.parametrize(
    ("claim", "why"),
    [(10, "memfd of"), (-1, "outside"), ((1 << 30) + 1, "outside")],
)
def test_a_host_bulk_frame_that_lies_is_a_protocol_error(session: Session, claim: int, why: str) -> None:
    session.registry.add("echo", lambda data: data)
    session.connect()
    header = {"type": "call", "id": 1, "method": "echo", "args": {}, "body": "data", "bulk": claim}
    send_with_fd(session, header, memfd(b"short"))
    session.wait_served()
    assert why in str(session.serve_error)


def test_a_bulk_frame_without_a_descriptor_is_a_protocol_error(session: Session) -> None:
    session.registry.add("echo", lambda data: data)
    session.connect()
    session.host.send({"type": "call", "id": 1, "method": "echo", "args": {}, "body": "data", "bulk": 3})
    session.wait_served()
    assert "descriptor" in str(session.serve_error)


def test_the_mapping_outlives_the_descriptor() -> None:
    from plugbox._bulk import incoming

    view = incoming(memfd(b"abc" * 1000), 3000, "call")
    assert isinstance(view, memoryview) and view.readonly and bytes(view[:3]) == b"abc"
    with pytest.raises(TypeError):
        view[0] = 1  # type: ignore[index]
    assert isinstance(view.obj, mmap.mmap)
