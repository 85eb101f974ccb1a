"""The baseline: a raw Python peer speaking the same framing over the same kind of socket,
with no SDK, no broker, no gate and no audit. Modes:
  client N PAYLOAD  -- sends N calls, prints each round trip in ns as JSON
  server            -- answers every call with its args' "x" until EOF
"""
import json
import os
import struct
import sys
import time

FD = int(os.environ["PLUGBOX_FD"])


def read_exact(n):
    out = b""
    while len(out) < n:
        chunk = os.read(FD, n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def send(header, body=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    os.write(FD, struct.pack(">II", 4 + len(h) + len(body), len(h)) + h + body)


def recv():
    length, hl = struct.unpack(">II", read_exact(8))
    payload = read_exact(length - 4)
    return json.loads(payload[:hl]), payload[hl:]


if sys.argv[1] == "client":
    n, payload = int(sys.argv[2]), sys.argv[3]
    clock = time.perf_counter_ns
    out = []
    for i in range(1, n + 1):
        t = clock()
        send({"type": "call", "id": i, "method": "bench.echo", "args": {"x": payload}})
        recv()
        out.append(clock() - t)
    print(json.dumps(out))
else:
    try:
        while True:
            h, body = recv()
            send({"type": "result", "id": h["id"], "result": h["args"]["x"]})
    except EOFError:
        pass
