"""A fake plugbox host for the tests: the protocol's host side over a socketpair.

Written with `json` and `struct`, independently of the SDK's own codec, so that the tests check
the SDK against the protocol rather than against itself.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

SDK_DIR = str(Path(__file__).resolve().parent.parent)
PYTHON = "/usr/bin/python3"
RUNTIME_CODE = "import sys; sys.path[:0]=[{sdk!r}]; import plugbox._runtime as r; r.main({entry!r})"

Header = dict[str, Any]


def encode(header: Header, body: bytes = b"") -> bytes:
    raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return struct.pack(">II", 4 + len(raw) + len(body), len(raw)) + raw + body


def welcome(
    capabilities: tuple[str, ...] = ("log",),
    *,
    max_in_flight: int = 16,
    instance: str = "demo#1",
    max_frame_bytes: int = 16 * 1024 * 1024,
    max_header_bytes: int = 1024 * 1024,
) -> Header:
    return {
        "type": "welcome",
        "protocol": 1,
        "instance": instance,
        "capabilities": list(capabilities),
        "limits": {
            "max_frame_bytes": max_frame_bytes,
            "max_header_bytes": max_header_bytes,
            "max_in_flight": max_in_flight,
        },
    }


class FakeHost:
    """The host's end of the channel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""

    def send(self, header: Header, body: bytes = b"") -> None:
        self.sock.sendall(encode(header, body))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exact(self, size: int, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        while len(self._buf) < size:
            chunk = self.sock.recv(max(size - len(self._buf), 65536))
            if not chunk:
                raise EOFError(f"channel closed with {len(self._buf)} of {size} bytes")
            self._buf += chunk
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def recv(self, timeout: float = 10.0) -> tuple[Header, bytes]:
        """The next frame, strictly checked: big-endian lengths, a JSON object header."""
        length, header_len = struct.unpack(">II", self._read_exact(8, timeout))
        assert 2 <= header_len <= length - 4, (length, header_len)
        raw = self._read_exact(header_len, timeout)
        body = self._read_exact(length - 4 - header_len, timeout)

        def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            assert len({k for k, _ in pairs}) == len(pairs), pairs
            return dict(pairs)

        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
        assert isinstance(header, dict)
        return header, body

    def recv_header(self, timeout: float = 10.0) -> Header:
        header, body = self.recv(timeout)
        assert body == b"", header
        return header

    def assert_silent(self, seconds: float = 0.3) -> None:
        """Nothing arrives within ``seconds``."""
        try:
            frame = self.recv(timeout=seconds)
        except socket.timeout:
            return
        raise AssertionError(f"unexpected frame {frame!r}")

    def assert_eof(self, timeout: float = 10.0) -> None:
        self.sock.settimeout(timeout)
        assert self._buf == b"" and self.sock.recv(1) == b""

    def call(
        self, call_id: int, method: str, body: bytes | None = None, body_name: str = "data", **args: Any
    ) -> None:
        header: Header = {"type": "call", "id": call_id, "method": method, "args": args}
        if body is not None:
            header["body"] = body_name
        self.send(header, body or b"")

    def handshake(self, **welcome_kwargs: Any) -> Header:
        """Read hello, answer welcome; returns the hello."""
        hello = self.recv_header()
        assert hello["type"] == "hello", hello
        self.send(welcome(**welcome_kwargs))
        return hello


class PluginProcess:
    """The SDK runtime in a real subprocess, started exactly as the engine starts it."""

    def __init__(
        self, entry: Path, *, env: dict[str, str] | None = None, name: str = "demo", version: str = "1.0.0"
    ) -> None:
        host_sock, child_sock = socket.socketpair()
        child_fd = child_sock.fileno()
        environment = {
            "PLUGBOX_FD": str(child_fd),
            "PLUGBOX_PLUGIN_NAME": name,
            "PLUGBOX_PLUGIN_VERSION": version,
        }
        if env is not None:
            environment = env
        self.proc = subprocess.Popen(
            [PYTHON, "-I", "-S", "-c", RUNTIME_CODE.format(sdk=SDK_DIR, entry=str(entry))],
            pass_fds=[child_fd],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        child_sock.close()
        self.host = FakeHost(host_sock)

    def finish(self, timeout: float = 10.0) -> tuple[int, str, str]:
        """Wait for exit; returns (status, stdout, stderr)."""
        out, err = self.proc.communicate(timeout=timeout)
        self.host.sock.close()
        return self.proc.returncode, out.decode(), err.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
        self.host.sock.close()
