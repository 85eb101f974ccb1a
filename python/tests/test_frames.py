from __future__ import annotations

import io
import os
import struct

import pytest
from fakehost import encode

from plugbox import LimitExceeded, ProtocolError
from plugbox._frames import MAX_FRAME_BYTES, MAX_HEADER_BYTES, FdReader, encode_frame, read_frame


def reader_of(data: bytes):  # type: ignore[no-untyped-def]
    stream = io.BytesIO(data)
    return stream.read


class ExplodingStream:
    """Serves ``prefix``, then fails the test if anything more is read."""

    def __init__(self, prefix: bytes) -> None:
        self.data = prefix
        self.requested: list[int] = []

    def read(self, size: int) -> bytes:
        self.requested.append(size)
        if not self.data:
            raise AssertionError(f"read({size}) past the length prefix: the cap was not checked first")
        out, self.data = self.data[:size], self.data[size:]
        return out


def test_round_trip_header_and_body() -> None:
    prefix, body = encode_frame({"type": "call", "id": 7, "args": {"é": [1, None]}}, b"\x00\xffbin")
    frame = prefix + body
    assert read_frame(reader_of(frame)) == (
        {"type": "call", "id": 7, "args": {"é": [1, None]}},
        b"\x00\xffbin",
    )


def test_wire_layout_is_big_endian_u32_and_compact_json() -> None:
    prefix, body = encode_frame({"type": "shutdown"}, b"xy")
    header = b'{"type":"shutdown"}'
    assert prefix == struct.pack(">II", 4 + len(header) + 2, len(header)) + header
    assert body == b"xy"
    # and the SDK reads what an independent encoder writes
    assert read_frame(reader_of(encode({"type": "shutdown"}, b"xy"))) == ({"type": "shutdown"}, b"xy")


def test_clean_eof_between_frames_is_none() -> None:
    assert read_frame(reader_of(b"")) is None


@pytest.mark.parametrize("cut", [1, 3, 4, 7, 8, 12, 20])
def test_eof_inside_a_frame_is_a_protocol_error(cut: int) -> None:
    frame = encode({"type": "shutdown"}, b"body")
    with pytest.raises(ProtocolError, match="closed inside a frame"):
        read_frame(reader_of(frame[:cut]))


def test_frame_of_exactly_the_cap_is_accepted_both_ways() -> None:
    header = {"type": "result", "id": 1, "body": True}
    raw_len = len(encode(header)) - 8
    body = b"\xab" * (MAX_FRAME_BYTES - 4 - raw_len)
    prefix, out_body = encode_frame(header, body)
    assert int.from_bytes(prefix[:4], "big") == MAX_FRAME_BYTES
    decoded = read_frame(reader_of(prefix + out_body))
    assert decoded is not None and decoded[0] == header and decoded[1] == body


def test_encoding_one_byte_over_the_cap_is_refused() -> None:
    header = {"type": "result", "id": 1, "body": True}
    raw_len = len(encode(header)) - 8
    body = b"\xab" * (MAX_FRAME_BYTES - 4 - raw_len + 1)
    with pytest.raises(LimitExceeded) as info:
        encode_frame(header, body)
    assert info.value.code == "too_large"
    assert str(MAX_FRAME_BYTES + 1) in info.value.message


def test_over_cap_length_is_rejected_before_reading_further() -> None:
    stream = ExplodingStream(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(LimitExceeded) as info:
        read_frame(stream.read)
    assert info.value.code == "too_large"
    assert stream.requested == [4]


def test_exact_cap_length_goes_on_to_read_the_header_length() -> None:
    stream = ExplodingStream(struct.pack(">I", MAX_FRAME_BYTES))
    with pytest.raises(AssertionError, match="past the length prefix"):
        read_frame(stream.read)
    assert stream.requested == [4, 4]


def test_over_cap_header_length_is_rejected_before_reading_the_header() -> None:
    stream = ExplodingStream(struct.pack(">II", MAX_FRAME_BYTES, MAX_HEADER_BYTES + 1))
    with pytest.raises(LimitExceeded, match="max_header_bytes"):
        read_frame(stream.read)
    assert stream.requested == [4, 4]


def test_over_cap_length_on_a_real_fd_never_reads_the_payload() -> None:
    # The write end stays open and the read end is non-blocking: any read past the prefix
    # would raise BlockingIOError instead of LimitExceeded.
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        os.write(w, struct.pack(">I", 0xFFFFFFFF))
        with pytest.raises(LimitExceeded):
            read_frame(FdReader(r).read)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(
    ("length", "header_len", "message"),
    [
        (5, 1, "too short"),
        (6, 1, "does not fit"),
        (10, 7, "does not fit"),
        (0, 0, "too short"),
    ],
)
def test_malformed_lengths_are_protocol_errors(length: int, header_len: int, message: str) -> None:
    data = struct.pack(">II", length, header_len) + b"{}" * 8
    with pytest.raises(ProtocolError, match=message):
        read_frame(reader_of(data))


@pytest.mark.parametrize("raw", [b"[1,2]", b'"s"', b"{} {}", b'{"a":1,"a":2}', b"{NaN}", b"\xff\xfe"])
def test_header_must_be_one_strict_json_object(raw: bytes) -> None:
    data = struct.pack(">II", 4 + len(raw), len(raw)) + raw
    with pytest.raises(ProtocolError, match="header"):
        read_frame(reader_of(data))


def test_header_over_its_cap_is_refused_when_encoding() -> None:
    with pytest.raises(LimitExceeded, match="max_header_bytes"):
        encode_frame({"type": "x", "pad": "a" * MAX_HEADER_BYTES})


def test_smaller_announced_limits_apply() -> None:
    with pytest.raises(LimitExceeded):
        encode_frame({"type": "x"}, b"1234", max_frame_bytes=19)
    prefix, body = encode_frame({"type": "x"}, b"1234", max_frame_bytes=4 + 12 + 4)
    assert len(prefix) + len(body) == 4 + 4 + 12 + 4


def test_fd_reader_reassembles_frames_split_across_reads() -> None:
    r, w = os.pipe()
    try:
        frames = encode({"type": "cancel", "id": 1}) + encode({"type": "shutdown"}, b"z" * 200_000)
        reader = FdReader(r)
        import threading

        writer = threading.Thread(
            target=lambda: [os.write(w, frames[i : i + 1000]) for i in range(0, len(frames), 1000)]
        )
        writer.start()
        assert read_frame(reader.read) == ({"type": "cancel", "id": 1}, b"")
        assert read_frame(reader.read) == ({"type": "shutdown"}, b"z" * 200_000)
        writer.join()
        os.close(w)
        w = -1
        assert read_frame(reader.read) is None
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# -- large frames --------------------------------------------------------------------------------


def _pieces(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at random points, from a byte to a few hundred KiB."""
    import random

    rng = random.Random(seed)
    out, i = [], 0
    while i < len(data):
        n = rng.choice((1, 3, 100, 4096, 70_000, 300_000))
        out.append(data[i : i + n])
        i += n
    return out


def test_fd_reader_reads_a_large_frame_arriving_in_pieces() -> None:
    import socket
    import threading

    body = bytes(range(256)) * (5 * 4096)  # 5 MiB, over the direct-read threshold
    frames = encode({"type": "result", "id": 1, "body": True}, body) + encode({"type": "shutdown"})
    a, b = socket.socketpair()
    try:

        def writer() -> None:
            for piece in _pieces(frames, 1):
                b.sendall(piece)

        thread = threading.Thread(target=writer)
        thread.start()
        reader = FdReader(a.fileno())
        header, got = reader.read_frame() or ({}, b"")
        assert header == {"type": "result", "id": 1, "body": True}
        assert type(got) is bytes and got == body
        assert reader.read_frame() == ({"type": "shutdown"}, b"")
        thread.join()
        b.shutdown(socket.SHUT_WR)
        assert reader.read_frame() is None
    finally:
        a.close()
        b.close()


def test_fd_reader_large_reads_share_one_scratch_buffer() -> None:
    import socket
    import threading

    one = encode({"type": "result", "id": 1, "body": True}, b"\x01" * 3_000_000)
    two = encode({"type": "result", "id": 2, "body": True}, b"\x02" * 2_000_000)
    a, b = socket.socketpair()
    try:
        thread = threading.Thread(target=b.sendall, args=(one + two,))
        thread.start()
        reader = FdReader(a.fileno())
        first = reader.read_frame()
        scratch = reader._scratch
        second = reader.read_frame()
        thread.join()
        assert first is not None and first[1] == b"\x01" * 3_000_000
        assert second is not None and second[1] == b"\x02" * 2_000_000
        assert reader._scratch is scratch  # reused, not reallocated
        assert first[1] is not second[1]
    finally:
        a.close()
        b.close()


def test_fd_reader_end_of_stream_inside_a_large_body() -> None:
    import socket

    frame = encode({"type": "result", "id": 1, "body": True}, b"x" * 1_000_000)
    a, b = socket.socketpair()
    try:
        import threading

        thread = threading.Thread(target=lambda: (b.sendall(frame[:600_000]), b.shutdown(socket.SHUT_WR)))
        thread.start()
        with pytest.raises(ProtocolError, match=r"closed inside a frame \(body: \d+ of 1000000 bytes\)"):
            FdReader(a.fileno()).read_frame()
        thread.join()
    finally:
        a.close()
        b.close()


def test_fd_reader_read_matches_read_frame_on_large_parts() -> None:
    import socket
    import threading

    frame = encode({"type": "result", "id": 1, "body": True}, bytes(range(256)) * 4096)
    a, b = socket.socketpair()
    try:
        thread = threading.Thread(target=lambda: [b.sendall(p) for p in _pieces(frame, 2)])
        thread.start()
        assert read_frame(FdReader(a.fileno()).read) == (
            {"type": "result", "id": 1, "body": True},
            bytes(range(256)) * 4096,
        )
        thread.join()
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("body_len", [0, 10, 20_000, 3_000_000])
@pytest.mark.parametrize("step", [1, 7, 100_000])
def test_write_frame_continues_partial_writes(
    monkeypatch: pytest.MonkeyPatch, body_len: int, step: int
) -> None:
    from plugbox import _frames

    out = bytearray()
    calls = []

    def write(fd: int, data: bytes) -> int:
        taken = bytes(data[:step])
        out.extend(taken)
        calls.append("write")
        return len(taken)

    def writev(fd: int, buffers: list[bytes]) -> int:
        calls.append("writev")
        room = step
        for buffer in buffers:
            taken = bytes(memoryview(buffer)[:room])
            out.extend(taken)
            room -= len(taken)
            if not room:
                break
        return step - room

    monkeypatch.setattr(_frames, "_os_write", write)
    monkeypatch.setattr(_frames, "_os_writev", writev)
    head, body = encode_frame(
        {"type": "result", "id": 1, "body": True}, bytes(range(256)) * (body_len // 256)
    )
    _frames.write_frame(5, head, body)
    assert bytes(out) == head + body
    if step == 100_000 and body_len > 16 * 1024:
        assert calls[0] == "writev"  # header and a large body leave in one call, not joined


def test_a_16_mib_body_round_trip_through_the_channel(session) -> None:  # type: ignore[no-untyped-def]
    import json

    session.registry.add("echo_bytes", lambda data: data)
    session.connect()
    header = {"type": "call", "id": 1, "method": "echo_bytes", "args": {}, "body": "data"}
    header_len = len(json.dumps(header, separators=(",", ":")))
    body = bytes(range(256)) * ((MAX_FRAME_BYTES - 4 - header_len) // 256)
    body += b"\x07" * (MAX_FRAME_BYTES - 4 - header_len - len(body))  # a frame of exactly the cap
    session.host.call(1, "echo_bytes", body=body, body_name="data")
    # The result, past the bulk threshold, goes by a buffer the host gives (test_bulk.py).
    from test_bulk import serve_buffer

    call, size, fd = serve_buffer(session)
    reply = session.host.recv_header(timeout=30)
    assert reply == {"type": "result", "id": 1, "body": True, "bulk": len(body)}
    assert (call, size) == (1, len(body))
    assert os.pread(fd, size, 0) == body
    os.close(fd)
    session.host.call(2, "plugbox.ping")
    assert session.host.recv_header() == {"type": "result", "id": 2, "result": "pong"}
