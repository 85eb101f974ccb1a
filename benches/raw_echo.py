"""The honest baseline peer: the simplest blocking Python end of a length-prefixed JSON echo.

It reads and writes fd 0, one end of a socketpair, with plain ``socket.recv_into`` and
``sendall``: no sandbox, no SDK, no threads. Frames are a 4-byte big-endian length and a JSON
object. A message ``{"id": N, "x": ...}`` is echoed as ``{"id": N, "x": ...}``; a message
``{"loop": N, "x": ...}`` makes this side the caller for N round trips, each timed with
``perf_counter_ns``, and ends with ``{"lat": [...]}``.
"""
import json
import socket
import time

sock = socket.socket(fileno=0)
buf = bytearray(1 << 16)
view = memoryview(buf)
have = 0


def recv():
    global have
    while True:
        if have >= 4:
            n = int.from_bytes(buf[:4], "big")
            if have >= 4 + n:
                msg = json.loads(buf[4 : 4 + n])
                rest = have - 4 - n
                if rest:
                    buf[:rest] = buf[4 + n : have]
                have = rest
                return msg
        got = sock.recv_into(view[have:])
        if not got:
            raise EOFError
        have += got


def send(obj):
    out = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(len(out).to_bytes(4, "big") + out)


def call_loop(n, x):
    clock = time.perf_counter_ns
    lat = []
    for i in range(1, n + 1):
        t = clock()
        send({"id": i, "x": x})
        recv()
        lat.append(clock() - t)
    send({"lat": lat})


try:
    while True:
        msg = recv()
        if "loop" in msg:
            call_loop(msg["loop"], msg["x"])
        else:
            send({"id": msg["id"], "x": msg["x"]})
except EOFError:
    pass
