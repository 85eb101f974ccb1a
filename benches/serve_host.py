"""The serve benchmark's Python host: the same JSON-lines calls through ``plugbox serve`` and to
a plain Python child on pipes (the baseline), interleaved in blocks (A B B A ...).

    serve_host.py host PLUGBOX WORK PLUGIN_DIR BLOCKS CALLS   prints {"h2p": ..., "p2h": ...}
    serve_host.py child                                      the baseline's child

Each row holds both sides' round trips in nanoseconds: ``h2p`` a call of the plugin's ``echo``
(80 B) timed here; ``p2h`` a call of the host capability ``bench.echo`` timed inside the plugin
(its ``host_loop`` command), against the child calling this host the same way.
"""
import json
import subprocess
import sys
import time

PAYLOAD = "x" * 80
clock = time.perf_counter_ns


def send(pipe, obj):
    pipe.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    pipe.flush()


def recv(pipe):
    line = pipe.readline()
    if not line:
        raise EOFError
    return json.loads(line)


def child():
    """The baseline's other end: echo each line, or be the caller for a ``loop``."""
    out, inp = sys.stdout.buffer, sys.stdin.buffer
    while True:
        try:
            msg = recv(inp)
        except EOFError:
            return
        if "loop" in msg:
            lat = []
            for i in range(1, msg["loop"] + 1):
                t = clock()
                send(out, {"id": i, "x": msg["x"]})
                recv(inp)
                lat.append(clock() - t)
            send(out, {"lat": lat})
        else:
            send(out, {"id": msg["id"], "x": msg["x"]})


class Serve:
    """``plugbox serve`` with the bench plugin loaded and ``bench.echo`` answered here."""

    def __init__(self, plugbox, work, plugin_dir):
        self.proc = subprocess.Popen(
            [plugbox, "serve", "--audit", f"{work}/audit.jsonl", "--state", f"{work}/state",
             "--allow-ungranted", "--capability", "bench.echo"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self.next_id = 1
        answer = self.request({"op": "load", "dir": plugin_dir})
        assert answer.get("ok"), answer

    def request(self, req):
        """Send one request and answer host calls until its answer comes."""
        req["id"] = rid = self.next_id
        self.next_id += 1
        send(self.proc.stdin, req)
        while True:
            msg = recv(self.proc.stdout)
            if msg.get("op") == "host_call":
                send(self.proc.stdin, {"op": "host_reply", "call": msg["call"], "result": msg["args"]["x"]})
            elif msg.get("id") == rid:
                return msg

    def h2p(self, n):
        out = []
        call = {"op": "call", "plugin": "bench-echo", "command": "echo", "args": {"x": PAYLOAD}}
        for _ in range(n):
            t = clock()
            answer = self.request(dict(call))
            out.append(clock() - t)
            assert answer["ok"], answer
        return out

    def p2h(self, n):
        answer = self.request({"op": "call", "plugin": "bench-echo", "command": "host_loop",
                               "args": {"n": n, "payload": PAYLOAD}})
        assert answer["ok"], answer
        return answer["result"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


class Child:
    """The baseline: a Python child speaking JSON lines on pipes."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", __file__, "child"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def h2p(self, n):
        out = []
        for i in range(1, n + 1):
            t = clock()
            send(self.proc.stdin, {"id": i, "x": PAYLOAD})
            recv(self.proc.stdout)
            out.append(clock() - t)
        return out

    def p2h(self, n):
        send(self.proc.stdin, {"loop": n, "x": PAYLOAD})
        while True:
            msg = recv(self.proc.stdout)
            if "lat" in msg:
                return msg["lat"]
            send(self.proc.stdin, {"id": msg["id"], "x": msg["x"]})

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def interleave(blocks, a, b):
    a(), b()  # warm-up, not counted
    xs, ys = [], []
    for block in range(blocks):
        if block % 2 == 0:
            xs += a()
            ys += b()
        else:
            ys += b()
            xs += a()
    return {"plugbox": xs, "baseline": ys}


def host(plugbox, work, plugin_dir, blocks, calls):
    serve, base = Serve(plugbox, work, plugin_dir), Child()
    rows = {
        "h2p": interleave(blocks, lambda: serve.h2p(calls), lambda: base.h2p(calls)),
        "p2h": interleave(blocks, lambda: serve.p2h(calls), lambda: base.p2h(calls)),
    }
    serve.close()
    base.close()
    print(json.dumps(rows))


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child()
    else:
        host(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
