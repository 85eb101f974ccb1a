"""Cold start of `/usr/bin/python3 -c pass` under `plugbox exec`, two plugbox binaries
compared in one interleaved run (blocks A B B A ..., so drift lands on both sides alike).

    /usr/bin/python3 benches/private_view_cost.py BEFORE_BINARY AFTER_BINARY [BLOCKS] [PER_BLOCK]

Prints the median, p10 and p90 of each side in milliseconds, and the median difference. Used to
measure the private view (own mount namespace, /proc, user database) added per spawn. Run as
root (the private view needs it), on a machine as quiet as you can get.
"""
import statistics
import subprocess
import sys
import tempfile
import time

before, after = sys.argv[1], sys.argv[2]
blocks = int(sys.argv[3]) if len(sys.argv) > 3 else 10
per_block = int(sys.argv[4]) if len(sys.argv) > 4 else 20

with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
    f.write("schema = 1\n")
    policy = f.name


def once(binary):
    start = time.perf_counter()
    subprocess.run([binary, "exec", "--policy", policy, "--", "/usr/bin/python3", "-c", "pass"],
                   check=True, stdin=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def bare():
    start = time.perf_counter()
    subprocess.run(["/usr/bin/python3", "-c", "pass"], check=True, stdin=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


times = {"bare": [], "before": [], "after": []}
for block in range(blocks):
    order = ["before", "after"] if block % 2 == 0 else ["after", "before"]
    for side in order:
        binary = before if side == "before" else after
        times[side].extend(once(binary) for _ in range(per_block))
    times["bare"].extend(bare() for _ in range(per_block // 2))


def line(name, xs):
    q = statistics.quantiles(xs, n=10)
    return f"{name:7} n={len(xs):4} median={statistics.median(xs):7.2f} ms  p10={q[0]:7.2f}  p90={q[-1]:7.2f}"


for name, xs in times.items():
    print(line(name, xs))
print(f"after - before (medians): {statistics.median(times['after']) - statistics.median(times['before']):+.2f} ms")
