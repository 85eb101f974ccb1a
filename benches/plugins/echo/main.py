"""Benchmark plugin: echoes, and times host-capability round trips from inside the sandbox."""
import time

import plugbox


@plugbox.command
def echo(x):
    return x


@plugbox.command
def echo_bytes(data: bytes) -> bytes:
    return data


@plugbox.command
def host_loop(n: int, payload: str) -> list:
    """Calls the host's bench.echo n times; returns each round trip in nanoseconds."""
    call = plugbox.host.call
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        t = clock()
        call("bench.echo", x=payload)
        out.append(clock() - t)
    return out
