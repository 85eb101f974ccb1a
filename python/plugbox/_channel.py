"""The connection to the host: framed messages on one fd, the handshake, and serving.

Any thread may write; a write lock keeps each frame whole on the wire. Serving the host's calls
(a pool of threads, which the channel's reader is one of) is :mod:`plugbox._serving`, which
the package preloads from its byte code with the rest of the SDK (``plugbox/__init__.py``), so
the first health probe finds it ready. Frames are read with ``recvmsg`` on a dup of the fd (a
frame may carry a bulk body's memfd, :mod:`plugbox._bulk`) and written with
``os.write``/``os.writev``.
"""

from __future__ import annotations

import _thread

from . import _messages as msg
from ._calls import Outgoing, warn
from ._errors import PlugboxError, ProtocolError
from ._frames import (
    MAX_FRAME_BYTES,
    MAX_HEADER_BYTES,
    PROTOCOL_VERSION,
    FdReader,
    encode_frame,
    frame_prefix,
    os_write,
    write_all,
    write_frame,
)
from ._strict_json import dumps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Final

    from ._commands import Registry
    from ._serving import Server

MAX_WORKERS: Final = 16  # commands that run at once; more wait in a queue


class Channel:
    """A plugin's connection to its host over the fd from ``PLUGBOX_FD``.

    The fd stays owned by the creator: :meth:`close` stops traffic but does not close it.
    """

    def __init__(self, fd: int, *, max_workers: int = MAX_WORKERS) -> None:
        self.fd = fd
        self.max_workers = max_workers  # host calls that run at once
        self._reader = FdReader(fd)
        self._write_lock = _thread.allocate_lock()
        self._lock = _thread.allocate_lock()  # guards _closed, and the server's state
        self._closed: str | None = None  # why the channel closed
        self._server: Server | None = None  # serving, once serve() has begun
        self.outgoing = Outgoing(self.send_raw, self.send)  # the plugin's calls to the host
        self.instance = ""
        self.max_frame_bytes = MAX_FRAME_BYTES
        self.max_header_bytes = MAX_HEADER_BYTES

    # -- the wire ------------------------------------------------------------------------------

    def send(
        self,
        header: dict[str, object],
        body: bytes = b"",
        default: Callable[[object], object] | None = None,
    ) -> None:
        """Write one frame. Encoding errors raise before anything is written."""
        head, body = encode_frame(
            header,
            body,
            max_frame_bytes=self.max_frame_bytes,
            max_header_bytes=self.max_header_bytes,
            default=default,
        )
        self._write(head, body)

    def send_raw(self, raw_header: bytes, body: bytes = b"") -> None:
        """Write one frame whose header is already encoded (strict JSON, UTF-8)."""
        self._write(frame_prefix(raw_header, len(body), self.max_frame_bytes, self.max_header_bytes), body)

    def _write(self, head: bytes, body: bytes) -> None:
        with self._write_lock:
            if self._closed is not None:
                raise ProtocolError(f"the channel to the host is closed ({self._closed})")
            try:
                if body:
                    write_frame(self.fd, head, body)
                else:
                    written = os_write(self.fd, head)
                    if written != len(head):  # a partial write: rare, for a large header
                        write_all(self.fd, head[written:])
            except OSError as exc:
                self.close(f"cannot write to the channel: {exc}")
                raise ProtocolError(f"cannot write to the channel: {exc}") from None

    def _send_quietly(self, header: dict[str, object]) -> None:
        try:
            self.send(header)
        except PlugboxError:
            pass  # the channel is closed: there is nobody left to tell
        except Exception as exc:  # not for the SDK's own headers; but never lose a worker
            warn(f"cannot send a {header.get('type')} frame: {type(exc).__name__}: {exc}")

    def _read(self) -> tuple[dict[str, object], bytes] | None:
        try:
            return self._reader.read_frame()
        except OSError as exc:
            raise ProtocolError(f"cannot read from the channel: {exc}") from None

    def close(self, reason: str) -> None:
        """Stop all traffic: waiting callers get :class:`ProtocolError` naming ``reason``."""
        with self._lock:
            if self._closed is not None:
                return
            self._closed = reason
            idle = self._server.closing() if self._server is not None else []
        for worker in idle:
            worker.wake.release()
        self.outgoing.fail_all(reason)

    # -- handshake -----------------------------------------------------------------------------

    def handshake(
        self,
        name: str,
        version: str,
        commands: list[str],
        schemas: dict[str, object] | None = None,
        *,
        encoded_hello: bytes | None = None,
    ) -> msg.Welcome:
        """Send ``hello`` (with the commands' argument ``schemas``, if any; or ``encoded_hello``,
        its header already encoded by :func:`encode_hello`) and read the answer. Raises
        ``HandshakeRefused`` on ``refuse``."""
        if encoded_hello is None:
            self.send(hello_header(name, version, commands, schemas))
        else:
            self.send_raw(encoded_hello)
        # While the host checks hello and answers: import what serving the first frame (the
        # host's first health probe, on the path to ready) needs, instead of after it arrives.
        from . import _serving  # noqa: F401
        frame = self._read()
        if frame is None:
            raise ProtocolError("the host closed the channel instead of answering hello")
        header, body = frame
        kind = header.get("type")
        if kind == "refuse":
            raise msg.parse_refuse(header, body)
        if kind != "welcome":
            raise ProtocolError(f"expected welcome or refuse, got a message of type {msg.short(kind)}")
        welcome = msg.parse_welcome(header, body)
        self.instance = welcome.instance
        # Never send more than either side accepts.
        self.max_frame_bytes = min(MAX_FRAME_BYTES, welcome.max_frame_bytes)
        self.max_header_bytes = min(MAX_HEADER_BYTES, welcome.max_header_bytes)
        self.outgoing.configure(welcome.capabilities, welcome.max_in_flight)
        return welcome

    # -- serving -------------------------------------------------------------------------------

    # -- serving -------------------------------------------------------------------------------

    def serve(self, registry: Registry) -> str:
        """Route frames until ``shutdown`` (returns ``"shutdown"``) or end of stream (``"eof"``),
        running the commands of ``registry`` for the host's calls.

        A protocol violation by the host closes the channel and raises (:class:`ProtocolError`,
        or :class:`LimitExceeded` for an over-cap frame). Call once, after the handshake. Returns
        at once when serving ends, even while commands still run.
        """
        # The serving machinery is a module of its own, imported during the handshake.
        try:
            first = self._read()
            if first is None:
                self.close("the host closed the channel")
                return "eof"
            if first[0].get("type") == "shutdown":
                msg.parse_shutdown(*first)
                self.close("the host sent shutdown")
                return "shutdown"
        except PlugboxError as exc:
            self.close(f"protocol violation by the host: {exc}")
            raise
        from ._serving import Server

        server = Server(self, registry)
        with self._lock:
            self._server = server
        self.outgoing.reader_hook(server.await_reply)
        return server.serve(first)


def hello_header(
    name: str, version: str, commands: list[str], schemas: dict[str, object] | None = None
) -> dict[str, object]:
    """The ``hello`` message's header."""
    hello: dict[str, object] = {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "plugin": {"name": name, "version": version},
        "commands": commands,
    }
    if schemas:
        hello["schemas"] = schemas
    return hello


def encode_hello(name: str, version: str, commands: list[str], schemas: dict[str, object] | None = None) -> bytes:
    """The ``hello`` header encoded once (a zygote template does it for all its instances)."""
    return dumps(hello_header(name, version, commands, schemas))


# The channel `plugbox.host` and `plugbox.log` use; set by the runtime after the handshake.
_active: Channel | None = None


def activate(channel: Channel | None) -> None:
    global _active
    _active = channel


def active() -> Channel | None:
    return _active


def require_active(api: str) -> Channel:
    channel = _active
    if channel is None:
        raise ProtocolError(
            f"{api}: not connected to a host. Host calls work only in a plugin that plugbox runs,"
            " after the handshake (not while the plugin's module is being loaded)"
        )
    return channel
