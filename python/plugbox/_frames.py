"""Frames on the wire (protocol.md §2): ``length | header_len | header JSON | body``.

Both integers are unsigned 32-bit big-endian. Every length read from the peer is checked against
its cap before the bytes it announces are read or allocated. A frame whose header says
``"bulk": N`` has no body of its own: it is the memfd the host passed with it (§2.1,
:mod:`plugbox._bulk`), so the channel is read with ``recvmsg``, which receives descriptors.
"""

from __future__ import annotations

from ._errors import LimitExceeded, ProtocolError
from ._strict_json import StrictJSONError, dumps, loads

import _socket
from sys import byteorder as _BYTEORDER

try:  # `posix` is built in; `os` would add about 1 ms of imports to every cold start
    from posix import dup as _os_dup
    from posix import read as _os_read
    from posix import readv as _os_readv
    from posix import write as _os_write
    from posix import writev as _os_writev
except ImportError:  # not a POSIX system (an editor or type checker on another OS)
    from os import dup as _os_dup
    from os import read as _os_read
    from os import readv as _os_readv
    from os import write as _os_write
    from os import writev as _os_writev

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Final

os_write = _os_write  # for the channel's write of a small frame, without a function between

PROTOCOL_VERSION: Final = 1
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024  # largest `length`; exactly this much is accepted
MAX_HEADER_BYTES: Final = 1024 * 1024  # largest `header_len`
MIN_HEADER_BYTES: Final = 2  # the shortest JSON object, "{}"
_PREFIX_BYTES: Final = 4
_READ_CHUNK: Final = 64 * 1024  # the least FdReader asks the fd for when its buffer runs dry
# Wanted parts longer than this are read straight into a buffer of their own size (readv),
# rather than through FdReader's buffer. Below it, buffering saves system calls.
_DIRECT_READ: Final = 256 * 1024
_JOIN_WRITE: Final = 16 * 1024  # bodies up to this size are joined to the header: one write
BULK_THRESHOLD: Final = 14 << 20  # larger results go by a host buffer (_bulk); as the host's
_ANC_BYTES: Final = _socket.CMSG_SPACE(8 * 4)  # room for 8 descriptors (the host passes 1)
_FD_BYTES: Final = 4
_CLOEXEC: Final = getattr(_socket, "MSG_CMSG_CLOEXEC", 0)  # a subprocess inherits no memfd


def frame_prefix(
    raw_header: bytes,
    body_len: int,
    max_frame_bytes: int = MAX_FRAME_BYTES,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> bytes:
    """``length | header_len | raw_header`` for an encoded header and a body of ``body_len``.

    Raises :class:`LimitExceeded` (``too_large``) if the header or the frame exceeds its cap.
    """
    header_len = len(raw_header)
    if header_len > max_header_bytes:
        raise LimitExceeded(f"frame header of {header_len} bytes exceeds max_header_bytes {max_header_bytes}")
    length = _PREFIX_BYTES + header_len + body_len
    if length > max_frame_bytes:
        raise LimitExceeded(f"frame of {length} bytes exceeds max_frame_bytes {max_frame_bytes}")
    return length.to_bytes(4, "big") + header_len.to_bytes(4, "big") + raw_header


def encode_frame(
    header: dict[str, object],
    body: bytes = b"",
    *,
    max_frame_bytes: int = MAX_FRAME_BYTES,
    max_header_bytes: int = MAX_HEADER_BYTES,
    default: Callable[[object], object] | None = None,
) -> tuple[bytes, bytes]:
    """Encode one frame as ``(prefix_and_header, body)``, ready to be written in that order.

    ``default`` converts values JSON cannot hold (see :func:`dumps`). Raises
    ``TypeError``/:class:`StrictJSONError` if the header cannot be encoded, and
    :class:`LimitExceeded` (``too_large``) if the header or the frame exceeds its cap.
    """
    raw = dumps(header, default=default)
    return frame_prefix(raw, len(body), max_frame_bytes, max_header_bytes), body


def read_frame(
    read: Callable[[int], bytes],
    *,
    max_frame_bytes: int = MAX_FRAME_BYTES,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> tuple[dict[str, object], bytes] | None:
    """Read one frame with ``read(n)``, which returns ``n`` bytes, or fewer only at end of stream.

    Returns ``None`` on a clean end of stream (between frames). Raises :class:`LimitExceeded`
    for an over-cap ``length`` or ``header_len`` (before reading what they announce), and
    :class:`ProtocolError` for any other malformed frame or a stream cut inside a frame.

    :meth:`FdReader.read_frame` is the same, faster, for a file descriptor.
    """
    prefix = read(_PREFIX_BYTES)
    if not prefix:
        return None
    length = int.from_bytes(_exactly(prefix, _PREFIX_BYTES, "frame length"), "big")
    _check_length(length, max_frame_bytes)
    header_len = int.from_bytes(_exactly(read(_PREFIX_BYTES), _PREFIX_BYTES, "header length"), "big")
    _check_header_len(header_len, length, max_header_bytes)
    raw = _exactly(read(header_len), header_len, "header")
    body_len = length - _PREFIX_BYTES - header_len
    body = _exactly(read(body_len), body_len, "body") if body_len else b""
    return decode_header(raw), body


def _check_length(length: int, max_frame_bytes: int) -> None:
    if length > max_frame_bytes:
        raise LimitExceeded(f"frame length {length} exceeds max_frame_bytes {max_frame_bytes}")
    if length < _PREFIX_BYTES + MIN_HEADER_BYTES:
        raise ProtocolError(f"frame length {length} is too short for a header")


def _check_header_len(header_len: int, length: int, max_header_bytes: int) -> None:
    if header_len > max_header_bytes:
        raise LimitExceeded(f"header length {header_len} exceeds max_header_bytes {max_header_bytes}")
    if not MIN_HEADER_BYTES <= header_len <= length - _PREFIX_BYTES:
        raise ProtocolError(f"header length {header_len} does not fit frame length {length}")


def decode_header(raw: bytes) -> dict[str, object]:
    """The header object of a frame, strictly decoded; :class:`ProtocolError` if it is not one."""
    try:
        header = loads(raw)
    except StrictJSONError as exc:
        raise ProtocolError(f"frame header is not strict JSON: {exc}") from None
    if type(header) is not dict:
        raise ProtocolError(f"frame header is a JSON {type(header).__name__}, not an object")
    return header


def _exactly(data: bytes, size: int, what: str) -> bytes:
    if len(data) != size:
        raise ProtocolError(f"channel closed inside a frame ({what}: {len(data)} of {size} bytes)")
    return data


class FdReader:
    """Buffered exact reads from a file descriptor, with ``os.read``/``os.readv`` only.

    Small reads come out of one buffer that a single ``os.read`` usually fills with a whole
    frame (or several). A large part (a big body) is read with ``os.readv`` straight into one
    reusable buffer, then copied once into the ``bytes`` returned.
    """

    __slots__ = ("_buf", "_fd", "_fds", "_pos", "_scratch", "_sock")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = b""  # bytes read but not consumed yet start at _pos
        self._pos = 0
        self._scratch = bytearray()  # for large reads; as large as the largest so far
        self._fds: list[int] = []  # descriptors received and not yet claimed by a bulk frame
        self._sock: _socket.socket | None = None  # a socket on a dup of fd, to use recvmsg
        try:
            self._sock = _socket.socket(fileno=_os_dup(fd))
        except OSError:  # not a socket (a pipe in a test): no descriptor can come
            pass

    def _recv(self, size: int) -> bytes:
        """One read of up to ``size`` bytes, keeping any descriptors passed with them."""
        sock = self._sock
        if sock is None:
            return _os_read(self._fd, size)
        data, ancillary, flags, _ = sock.recvmsg(size, _ANC_BYTES, _CLOEXEC)
        if ancillary or flags & _socket.MSG_CTRUNC:
            self._keep_fds(ancillary, flags)
        return data

    def _recv_into(self, view: memoryview) -> int:
        """One read into ``view``, keeping any descriptors passed with the bytes."""
        sock = self._sock
        if sock is None:
            return _os_readv(self._fd, [view])
        got, ancillary, flags, _ = sock.recvmsg_into([view], _ANC_BYTES, _CLOEXEC)
        if ancillary or flags & _socket.MSG_CTRUNC:
            self._keep_fds(ancillary, flags)
        return got

    def _keep_fds(self, ancillary: list[tuple[int, int, bytes]], flags: int) -> None:
        for level, kind, data in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                whole = len(data) - len(data) % _FD_BYTES
                for at in range(0, whole, _FD_BYTES):
                    self._fds.append(int.from_bytes(data[at : at + _FD_BYTES], _BYTEORDER))
        if flags & _socket.MSG_CTRUNC:
            raise ProtocolError("the host passed more descriptors than a frame carries")

    def _bulk(self, header: dict[str, object], body: bytes) -> object:
        """The body of a ``bulk`` frame: the memfd passed with it (see :mod:`plugbox._bulk`)."""
        size = header.pop("bulk")
        if body or not self._fds:
            raise ProtocolError("a bulk frame must have no body and come with a descriptor")
        from ._bulk import incoming

        return incoming(self._fds.pop(0), size, header.get("type"))

    def _fill(self, need: int) -> int:
        """Read until at least ``need`` bytes are buffered or the stream ends; returns how many
        are buffered. ``need`` stays small (at most _DIRECT_READ plus a header)."""
        buf, pos = self._buf, self._pos
        have = len(buf) - pos
        while have < need:
            chunk = self._recv(max(need - have, _READ_CHUNK))
            if not chunk:
                break
            buf = buf[pos:] + chunk if have else chunk
            pos = 0
            have = len(buf)
        self._buf, self._pos = buf, pos
        return have

    def _take(self, size: int) -> bytes:
        """The next ``size`` buffered bytes (the caller made sure there are that many)."""
        buf, pos = self._buf, self._pos
        end = pos + size
        if end == len(buf):
            self._buf, self._pos = b"", 0
            return buf if pos == 0 else buf[pos:]
        self._pos = end
        return buf[pos:end]

    def _read_direct(self, size: int) -> bytes:
        """Read ``size`` bytes: first what is buffered, then the rest straight from the fd into
        a scratch buffer kept for the next large read (no allocation per chunk, no zeroing, no
        page faults after the first). Fewer only if the stream ends first."""
        scratch = self._scratch
        if len(scratch) < size:
            scratch = self._scratch = bytearray(size)
        buf, pos = self._buf, self._pos
        got = len(buf) - pos  # less than `size`, else the caller would have taken it from _buf
        self._buf, self._pos = b"", 0
        with memoryview(scratch) as view:
            if got:
                view[:got] = memoryview(buf)[pos:]
            while got < size:
                n = self._recv_into(view[got:size])
                if not n:
                    break
                got += n
            return view[:got].tobytes()  # the one copy: commands receive `bytes`

    def read(self, size: int) -> bytes:
        """Return ``size`` bytes, or fewer if the stream ends first."""
        have = len(self._buf) - self._pos
        if have < size:
            if size - have > _DIRECT_READ:
                return self._read_direct(size)
            size = min(size, self._fill(size))
        return self._take(size) if size else b""

    def _fill_prefix(self, max_frame_bytes: int) -> bool:
        """Buffer at least the 8 bytes of ``length`` and ``header_len``, checking ``length`` as
        soon as it is there: a peer must not make us wait for, or allocate, what an over-cap
        length announces. False on a clean end of stream (before any byte of a frame)."""
        have = self._fill(_PREFIX_BYTES)
        if not have:
            return False
        if have < _PREFIX_BYTES:
            _exactly(self._take(have), _PREFIX_BYTES, "frame length")
        pos = self._pos
        _check_length(int.from_bytes(self._buf[pos : pos + 4], "big"), max_frame_bytes)
        have = self._fill(8)
        if have < 8:
            _exactly(self._take(have)[4:], _PREFIX_BYTES, "header length")
        return True

    def read_frame(
        self, max_frame_bytes: int = MAX_FRAME_BYTES, max_header_bytes: int = MAX_HEADER_BYTES
    ) -> tuple[dict[str, object], bytes] | None:
        """:func:`read_frame` on this fd: the same checks, in the same order, fewer steps."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 8:
            if pos == len(buf):  # between frames, nothing buffered: the usual case
                buf = self._buf = self._recv(_READ_CHUNK)
                pos = self._pos = 0
                if not buf:
                    return None
            if len(buf) - pos < 8 and not self._fill_prefix(max_frame_bytes):
                return None
            buf, pos = self._buf, self._pos
        length = int.from_bytes(buf[pos : pos + 4], "big")
        header_len = int.from_bytes(buf[pos + 4 : pos + 8], "big")
        if not (
            _PREFIX_BYTES + MIN_HEADER_BYTES <= length <= max_frame_bytes
            and MIN_HEADER_BYTES <= header_len <= max_header_bytes
            and header_len <= length - _PREFIX_BYTES
        ):
            _check_length(length, max_frame_bytes)
            _check_header_len(header_len, length, max_header_bytes)
        end = pos + _PREFIX_BYTES + length
        size = len(buf)
        if end <= size:  # the common case: the whole frame is buffered
            start = pos + 8
            stop = start + header_len
            if end == size:
                self._buf, self._pos = b"", 0
            else:
                self._pos = end
            header = decode_header(buf[start:stop])
            body = buf[stop:end] if end > stop else b""
        else:
            self._pos = pos + 8
            raw = _exactly(self.read(header_len), header_len, "header")
            body_len = length - _PREFIX_BYTES - header_len
            body = _exactly(self.read(body_len), body_len, "body") if body_len else b""
            header = decode_header(raw)
        if "bulk" in header:
            return header, self._bulk(header, body)  # type: ignore[return-value]
        return header, body


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` with ``os.write``, however many calls it takes."""
    written = _os_write(fd, data)
    if written == len(data):
        return
    with memoryview(data) as view:
        while written < len(view):
            written += _os_write(fd, view[written:])


def write_frame(fd: int, head: bytes, body: bytes) -> None:
    """Write ``head`` (prefix and header) then ``body`` to ``fd``: one system call when the fd
    takes it all, without joining a large body to the header; partial writes are continued."""
    if not body:
        write_all(fd, head)
        return
    if len(body) <= _JOIN_WRITE:
        write_all(fd, head + body)
        return
    written = _os_writev(fd, [head, body])
    while written < len(head):  # rare: the fd took less than the header
        written += _os_writev(fd, [memoryview(head)[written:], body])
    written -= len(head)
    if written < len(body):
        with memoryview(body) as view:
            while written < len(view):
                written += _os_write(fd, view[written:])
