"""Bulk bodies (protocol.md §2.1): bodies larger than :data:`plugbox._frames.BULK_THRESHOLD` travel in a memfd.

* A host call's large ``bytes`` argument arrives as a memfd the host sealed immutable; the
  command receives a read-only ``memoryview`` of a shared mapping of it: no copy.
* A command's large ``bytes`` result is written into a buffer the host creates for it on
  request (the built-in call ``plugbox.buffer``); the reply then says ``"bulk": N``.

The plugin never sends a descriptor: the host refuses any, and cuts the plugin off.
Imported on the first bulk frame or result only.
"""

from __future__ import annotations

import mmap as _mmap

from ._errors import LimitExceeded, ProtocolError

try:
    from posix import close as _close
    from posix import fstat as _fstat
except ImportError:  # not a POSIX system (an editor or type checker on another OS)
    from os import close as _close
    from os import fstat as _fstat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from ._calls import Outgoing

MAX_BULK_BYTES: Final = 1 << 30  # the protocol's largest bulk body
BUFFER_METHOD: Final = "plugbox.buffer"
# A result is written through mappings of this many bytes at a time, so that it costs the
# plugin's address space (RLIMIT_AS) no more than this beside the result itself.
WINDOW: Final = 32 << 20


class Buffer:
    """A result buffer the host passed: ``size`` bytes of a memfd to write once, then close."""

    __slots__ = ("fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def write(self, data: object) -> None:
        """Write ``data`` (any bytes-like object) at offset 0, through shared mappings of at most
        :data:`WINDOW` bytes at a time. Not ``pwrite``: ``RLIMIT_FSIZE`` (``limits.file_size_mib``)
        applies to it even on a memfd, and a mapping writes the size the host fixed."""
        with memoryview(data) as view, view.cast("B") as flat:  # type: ignore[arg-type]
            size = flat.nbytes
            if size > self.size:
                raise LimitExceeded(f"result of {size} bytes exceeds its buffer of {self.size}")
            flags = _mmap.MAP_SHARED | getattr(_mmap, "MAP_POPULATE", 0)
            prot = _mmap.PROT_READ | _mmap.PROT_WRITE
            for start in range(0, size, WINDOW):
                end = min(start + WINDOW, size)
                with _mmap.mmap(self.fd, end - start, flags=flags, prot=prot, offset=start) as window:
                    window[:] = flat[start:end]

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            _close(fd)


def incoming(fd: int, size: object, kind: object) -> object:
    """The body of a bulk frame of type ``kind`` whose memfd is ``fd`` (owned from here on):
    a read-only ``memoryview`` for a call, a :class:`Buffer` for a result."""
    try:
        if type(size) is not int or not 0 <= size <= MAX_BULK_BYTES:
            raise ProtocolError(f"bulk length {size!r} is outside 0..{MAX_BULK_BYTES}")
        held = _fstat(fd).st_size
        if held < size:
            raise ProtocolError(f"bulk body of {size} bytes in a memfd of {held}")
        if kind == "result":
            buffer, fd = Buffer(fd, size), -1
            return buffer
        if kind != "call":
            raise ProtocolError(f"a {kind!r} frame cannot be bulk")
        if size == 0:
            return b""
        flags = _mmap.MAP_SHARED | getattr(_mmap, "MAP_POPULATE", 0)
        return memoryview(_mmap.mmap(fd, size, flags=flags, prot=_mmap.PROT_READ))
    finally:
        if fd >= 0:
            _close(fd)  # a mapping outlives its descriptor


def ship_result(outgoing: Outgoing, call_id: int, body: object) -> bytes:
    """Write the large result ``body`` of host call ``call_id`` into a buffer asked of the host;
    returns the reply's header. Raises :class:`LimitExceeded` (``too_large``) past the
    protocol's cap, or when the host refuses a buffer that large."""
    with memoryview(body) as view:  # type: ignore[arg-type]
        size = view.nbytes
    if size > MAX_BULK_BYTES:
        raise LimitExceeded(f"result of {size} bytes exceeds the protocol's {MAX_BULK_BYTES}")
    buffer = outgoing.call(BUFFER_METHOD, {"call": call_id, "len": size})
    if not isinstance(buffer, Buffer):
        raise ProtocolError(f"{BUFFER_METHOD} was answered without a buffer")
    try:
        buffer.write(body)
    finally:
        buffer.close()
    return f'{{"type":"result","id":{call_id},"body":true,"bulk":{size}}}'.encode()
