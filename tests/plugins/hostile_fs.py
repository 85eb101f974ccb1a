"""The plugin of tests/hostile_fs.rs: each command tries one `fs.*` call (or a few) and returns
{"ok": result} or {"code", "message"} of the error, so the test asserts exact codes."""

import os, time, plugbox
from concurrent.futures import ThreadPoolExecutor

def _try(f):
    try:
        r = f()
        return {"ok": r.decode("latin-1") if isinstance(r, bytes) else r}
    except plugbox.PlugboxError as e:
        return {"code": e.code, "message": e.message}

@plugbox.command
def read(path):
    return _try(lambda: plugbox.host.call("fs.read", path=path))

@plugbox.command
def wait_for(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)
    return True

@plugbox.command
def read_raw(path):
    return plugbox.host.call("fs.read", path=path).decode("latin-1")

@plugbox.command
def write(path, text):
    return _try(lambda: plugbox.host.call("fs.write", path=path, data=text.encode()))

@plugbox.command
def write_n(path, size):
    return _try(lambda: plugbox.host.call("fs.write", path=path, data=b"x" * size))

@plugbox.command
def ls(path):
    return _try(lambda: plugbox.host.call("fs.list", path=path))

@plugbox.command
def read_many(path, threads, each):
    def some(_):
        return [_try(lambda: plugbox.host.call("fs.read", path=path)).get("code") for _ in range(each)]
    with ThreadPoolExecutor(threads) as pool:
        return [c for codes in pool.map(some, range(threads)) for c in codes]
