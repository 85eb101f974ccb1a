"""The call overhead of plugbox.hosting over raw `plugbox serve` lines.

Pairs of serve processes, each with the same trivial plugin loaded: one driven by
``plugbox.hosting.Engine.call``, one by writing the same ``call`` line to its stdin and reading
the answer line from its stdout directly (no thread, no routing). Blocks of calls alternate
between the two so that a shared machine's noise falls on both; prints p50 and p99 of each, the ratio
of the medians, and the client's CPU time per call (less sensitive to a busy machine's
scheduling than latency is).

Each round starts a fresh pair (in alternating order: which process the scheduler favours
changes from pair to pair on a busy machine) and prints the median per-block ratio.

Usage (as root): /usr/bin/python3 python/benchmarks/hosting_overhead.py [PLUGBOX] [ROUNDS] [BLOCKS] [CALLS]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugbox.hosting import Engine  # noqa: E402

PLUGIN = "import plugbox\n\n@plugbox.command\ndef add(a, b):\n    return a + b\n"


def make_plugin(root: Path) -> Path:
    d = root / "bench-add"
    d.mkdir()
    (d / "plugbox.toml").write_text(
        'schema = 1\n[plugin]\nname = "bench-add"\nversion = "1.0.0"\napi = "^1"\nentry = "main.py"\n'
    )
    (d / "main.py").write_text(PLUGIN)
    for p in (root, d):
        os.chmod(p, 0o755)
    for f in d.iterdir():
        os.chmod(f, 0o644)
    return d


class Raw:
    """serve driven line by line on its pipes, one request at a time."""

    def __init__(self, plugbox: str, work: Path, plugin: Path) -> None:
        self.proc = subprocess.Popen(
            [plugbox, "serve", "--events", "--protocol", "1", "--allow-ungranted",
             "--audit", str(work / "raw.jsonl"), "--state", str(work / "raw-state")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # stdout buffered: readline is one read
        )
        assert self.proc.stdin and self.proc.stdout
        self.fd = self.proc.stdin.fileno()
        self.out = self.proc.stdout
        assert json.loads(self.out.readline())["op"] == "ready"
        assert self.ask({"id": 0, "op": "load", "dir": str(plugin)})["ok"]
        self.n = 0

    def ask(self, request: dict) -> dict:
        os.write(self.fd, (json.dumps(request, separators=(",", ":")) + "\n").encode())
        while True:
            msg = json.loads(self.out.readline())
            if "op" not in msg and msg["id"] == request["id"]:
                return msg

    def call(self, a: int, b: int) -> int:
        self.n += 1
        answer = self.ask({"id": self.n, "op": "call", "plugin": "bench-add", "command": "add", "args": {"a": a, "b": b}})
        return answer["result"]

    def close(self) -> None:
        self.ask({"id": "bye", "op": "shutdown"})
        assert self.proc.stdin
        self.proc.stdin.close()
        self.out.read()
        assert self.proc.wait() == 0


def timed(fn, calls: int) -> List[int]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(calls):
        t = time.perf_counter_ns()
        assert fn(i, 1) == i + 1
        out.append(time.perf_counter_ns() - t)
    return out


def pct(xs: List[int], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000


def one_round(plugbox: str, work: Path, plugin: Path, blocks: int, calls: int, lib_first: bool,
              raw_t: List[int], lib_t: List[int], cpu: Dict[str, float]) -> float:
    """Fresh serve processes (started in alternating order), blocks interleaved; returns the
    median of the per-block median ratios library/raw."""
    raw = None
    if not lib_first:
        raw = Raw(plugbox, work, plugin)
    ratios = []
    with Engine(audit=work / "lib.jsonl", state=work / "lib-state", plugbox=plugbox,
                grant_required=False) as engine:
        if raw is None:
            raw = Raw(plugbox, work, plugin)
        engine.load(plugin)
        lib_call = lambda a, b: engine.call("bench-add", "add", a=a, b=b)  # noqa: E731
        timed(raw.call, calls), timed(lib_call, calls)  # warm up
        for block in range(blocks):
            order = [("raw", raw.call, raw_t), ("lib", lib_call, lib_t)]
            if block % 2:
                order.reverse()
            got = {}
            for which, fn, sink in order:
                c = time.process_time()
                xs = timed(fn, calls)
                cpu[which] += time.process_time() - c
                sink.extend(xs)
                got[which] = statistics.median(xs)
            ratios.append(got["lib"] / got["raw"])
    raw.close()
    return statistics.median(ratios)


def main() -> None:
    plugbox = sys.argv[1] if len(sys.argv) > 1 else "target/debug/plugbox"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    blocks = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    calls = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    work = Path(tempfile.mkdtemp(prefix="plugbox-bench-"))
    raw_t: List[int] = []
    lib_t: List[int] = []
    cpu = {"raw": 0.0, "lib": 0.0}
    round_ratios = []
    try:
        plugin = make_plugin(work)
        for r in range(rounds):
            (work / f"round{r}").mkdir()
            round_ratios.append(one_round(plugbox, work / f"round{r}", plugin, blocks, calls, r % 2 == 1, raw_t, lib_t, cpu))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = rounds * blocks * calls
    print(f"{rounds} rounds (fresh serve pair each) x {blocks} interleaved blocks x {calls} calls (plugbox {plugbox})")
    print(f"raw serve lines : p50 {pct(raw_t, 0.5):8.1f} us  p99 {pct(raw_t, 0.99):8.1f} us")
    print(f"plugbox.hosting : p50 {pct(lib_t, 0.5):8.1f} us  p99 {pct(lib_t, 0.99):8.1f} us")
    print(f"p50 ratio library/raw: {pct(lib_t, 0.5) / pct(raw_t, 0.5):.3f}; per-round ratios: "
          + " ".join(f"{x:.2f}" for x in round_ratios) + f"; median {statistics.median(round_ratios):.3f}")
    per_call = {k: v / n * 1e6 for k, v in cpu.items()}
    print(f"this process's CPU per call (client side, all threads): raw {per_call['raw']:.1f} us, "
          f"library {per_call['lib']:.1f} us ({per_call['lib'] - per_call['raw']:+.1f} us)")


if __name__ == "__main__":
    main()
