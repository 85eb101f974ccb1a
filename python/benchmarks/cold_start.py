"""Cold start of a minimal plugin against bare interpreter startup, interleaved rounds.

    /usr/bin/python3 python/benchmarks/cold_start.py [ROUNDS]

"plugin" is spawn -> hello -> welcome -> shutdown -> exit, with the runtime started exactly as
the engine starts it; "bare" is `python3 -I -S -c pass`. The difference is the SDK's share:
imports, loading the entry file, the handshake, and the exit. Uses the test suite's fake host.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fakehost import PYTHON, PluginProcess

ENTRY = "import plugbox\n\n@plugbox.command\ndef hello(name):\n    return f'hello {name}'\n"


def plugin_once(entry: Path) -> float:
    start = time.perf_counter()
    process = PluginProcess(entry)
    process.host.handshake()
    process.host.send({"type": "shutdown"})
    status = process.proc.wait()
    elapsed = time.perf_counter() - start
    process.kill()
    assert status == 0, status
    return elapsed


def bare_once() -> float:
    start = time.perf_counter()
    subprocess.run([PYTHON, "-I", "-S", "-c", "pass"], check=True)
    return time.perf_counter() - start


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp) / "main.py"
        entry.write_text(ENTRY)
        plugin_once(entry)  # warm the page cache and write __pycache__
        bare, plugin = [], []
        for _ in range(rounds):
            bare.append(bare_once())
            plugin.append(plugin_once(entry))
    for name, samples in (("bare", bare), ("plugin", plugin)):
        print(
            f"{name:7} median {statistics.median(samples) * 1e3:6.2f} ms   min {min(samples) * 1e3:6.2f} ms"
        )
    print(
        f"SDK share: median {(statistics.median(plugin) - statistics.median(bare)) * 1e3:.2f} ms, "
        f"min {(min(plugin) - min(bare)) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
