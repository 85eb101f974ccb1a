from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the SDK, without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # fakehost

from fakehost import FakeHost, welcome

from plugbox import _channel
from plugbox._channel import Channel
from plugbox._commands import Registry


class Session:
    """An SDK channel in this process, connected to a FakeHost, served on a thread."""

    def __init__(self, **channel_kwargs: Any) -> None:
        plugin_sock, host_sock = socket.socketpair()
        self.plugin_sock = plugin_sock
        self.host = FakeHost(host_sock)
        self.channel = Channel(plugin_sock.fileno(), **channel_kwargs)
        self.registry = Registry()
        self.hello: dict[str, Any] | None = None
        self.serve_result: str | None = None
        self.serve_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def connect(self, commands: list[str] | None = None, **welcome_kwargs: Any) -> Session:
        self.host.send(welcome(**welcome_kwargs))  # buffered in the socket until read
        self.channel.handshake("demo", "1.0.0", commands or self.registry.names())
        self.hello = self.host.recv_header()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        _channel.activate(self.channel)
        return self

    def _serve(self) -> None:
        try:
            self.serve_result = self.channel.serve(self.registry)
        except BaseException as exc:  # recorded for the test to assert
            self.serve_error = exc

    def wait_served(self, timeout: float = 10.0) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "serve() did not return"

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            try:
                self.host.send({"type": "shutdown"})
            except OSError:
                pass
            self._thread.join(10)
        _channel.activate(None)
        self.plugin_sock.close()
        self.host.sock.close()


@pytest.fixture
def session() -> Iterator[Session]:
    s = Session()
    try:
        yield s
    finally:
        s.close()
