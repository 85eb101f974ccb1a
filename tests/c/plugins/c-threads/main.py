"""c-threads: commands tests/c/threads.c calls from many threads at once."""
import plugbox


@plugbox.command
def echo(n: int, thread: int) -> dict:
    return {"n": n, "thread": thread}


@plugbox.command
def double(n: int) -> int:
    return plugbox.host.call("host.double", n=n)["doubled"]


@plugbox.command
def meet(who: int) -> bool:
    return plugbox.host.call("host.meet", who=who)["met"]
