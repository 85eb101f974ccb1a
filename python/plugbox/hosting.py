"""Hosting plugins from a Python application, over ``plugbox serve`` (docs/python-host.md).

::

    with Engine(audit="plugins.jsonl", state="state", capabilities={"doc.get_text": get_text}) as engine:
        engine.load("plugins/word-count", grant="grants/word-count.toml")
        print(engine.call("word-count", "count"))
    # here serve has unloaded every plugin, sealed the audit log and exited 0

Stdlib only. One reader thread routes serve's answers to the callers waiting for them by
``id`` (any number of threads may call at once); one lock serialises writes; host capability
callables run on a small thread pool and event callbacks on their own thread, so neither can
delay an answer. :class:`AsyncEngine` is the asyncio face of the same engine.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from ._errors import PlugboxError, ProtocolError
from ._hosting_async import AsyncEngine
from ._hosting_caps import answer_host_call
from ._hosting_discover import discover
from ._hosting_lines import LineRouter, Slot
from ._hosting_types import (
    Discovered,
    Event,
    HostCall,
    LoadFailed,
    NotLoaded,
    ServeError,
    error_from_answer,
)

__all__ = [
    "AsyncEngine",
    "Discovered",
    "Engine",
    "Event",
    "HostCall",
    "LoadFailed",
    "NotLoaded",
    "ServeError",
    "discover",
]

_log = logging.getLogger("plugbox.hosting")
PathLike = Union[str, "os.PathLike[str]"]
Answer = Dict[str, Any]
#: A host capability: ``fn(call: HostCall, **args)``; its return value is the reply.
Capability = Callable[..., Any]
#: The protocol this library speaks.
PROTOCOL = 1
#: Compact JSON; NaN and infinities are not JSON, so they are refused here, not by serve.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Engine:
    """A ``plugbox serve`` child process and the plugins it runs. Use it as a context manager
    (or call :meth:`start` and :meth:`close`): leaving it shuts serve down, which unloads every
    plugin and seals the audit log, and raises :class:`ServeError` unless serve exited 0."""

    def __init__(
        self,
        *,
        audit: PathLike,
        state: PathLike,
        plugbox: PathLike = "plugbox",
        capabilities: Optional[Mapping[str, Capability]] = None,
        on_event: Optional[Callable[[Event], Any]] = None,
        grant_required: bool = True,
        extra_args: Sequence[str] = (),
        capability_workers: int = 4,
        stderr: Optional[IO[Any]] = None,
    ) -> None:
        self._argv = [os.fspath(plugbox), "serve", "--events", "--protocol", str(PROTOCOL)]
        self._argv += ["--audit", os.fspath(audit), "--state", os.fspath(state)]
        self._capabilities: Dict[str, Capability] = dict(capabilities or {})
        for name in self._capabilities:
            self._argv += ["--capability", name]
        if not grant_required:
            self._argv.append("--allow-ungranted")
        self._argv += list(extra_args)
        self.plugbox = os.fspath(plugbox)
        self._stderr = stderr
        self._workers = capability_workers
        self._callbacks: List[Callable[[Event], Any]] = [on_event] if on_event else []
        self._subscribers: List[Callable[[Optional[Event]], Any]] = []
        self._pending: Dict[int, Callable[[Answer], None]] = {}
        self._lock = threading.Lock()  # guards _pending, _subscribers and _closed
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._closed = False
        self._dead: Optional[PlugboxError] = None
        self._eof_seen = False
        self.ready: Dict[str, Any] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Engine:
        """Starts serve and waits for its ``ready`` line (protocol 1)."""
        proc = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            bufsize=0,
        )
        self._proc = proc
        assert proc.stdout is not None
        self._out = proc.stdout
        self._in_fd = proc.stdin.fileno() if proc.stdin else -1
        line = _first_line(self._out.fileno())
        try:
            ready = json.loads(line) if line else None
        except ValueError:
            ready = None
        if not isinstance(ready, dict) or ready.get("op") != "ready" or ready.get("protocol") != PROTOCOL:
            status = proc.wait()
            raise ServeError(f"serve did not start speaking protocol {PROTOCOL} (exit status {status}, first line {line[:200]!r})")
        self.ready = ready
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="plugbox-capability")
        self._event_queue: List[Optional[Event]] = []
        self._event_cv = threading.Condition()
        self._router = LineRouter(self._out.fileno(), self._route, self._on_eof)
        self._reader = threading.Thread(target=self._router.run_background, name="plugbox-serve-reader", daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch_events, name="plugbox-events", daemon=True)
        self._reader.start()
        self._dispatcher.start()
        return self

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.close()
        except PlugboxError:
            if exc is None:
                raise
            _log.exception("closing plugbox serve after an error")

    def close(self, timeout: float = 60.0) -> None:
        """Shuts serve down (every running request is answered first, then every plugin is
        unloaded and the audit log sealed) and waits for it to exit; raises
        :class:`ServeError` unless it exited 0. Idempotent."""
        with self._lock:
            if self._closed or self._proc is None:
                return
            self._closed = True
        proc = self._proc
        error: Optional[BaseException] = None
        try:
            self._request({"op": "shutdown"}, closing=True)
        except PlugboxError as exc:
            error = exc
        try:
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
        self._reader.join(timeout)
        self._pool.shutdown(wait=True)
        self._dispatcher.join(timeout)
        if status != 0:
            raise ServeError(f"plugbox serve exited with status {status}: the audit log may not be sealed") from error
        if error is not None:
            raise ServeError(f"shutdown was not answered: {error}") from error

    # -- requests -----------------------------------------------------------------------------

    def load(self, dir: PathLike, grant: Optional[PathLike] = None) -> Dict[str, Any]:
        """Loads the plugin in ``dir`` under the grant file ``grant``; returns ``{name,
        version, digest, state, ready_instances}``. Raises :class:`LoadFailed`."""
        req: Dict[str, Any] = {"op": "load", "dir": os.fspath(dir)}
        if grant is not None:
            req["grant"] = os.fspath(grant)
        return self._request(req)  # type: ignore[no-any-return]

    def describe(self, plugin: str) -> Dict[str, Any]:
        """The plugin's identity, description, granted capabilities and commands."""
        return self._request({"op": "describe", "plugin": plugin})  # type: ignore[no-any-return]

    def call(self, plugin: str, command: str, args: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Any:
        """Calls ``command`` of ``plugin`` with ``args`` (a dict) and/or keyword arguments;
        returns its result or raises the typed error (``e.code``, ``e.message``,
        ``e.traceback``)."""
        merged = {**args, **kwargs} if args else kwargs
        return self._request({"op": "call", "plugin": plugin, "command": command, "args": merged}, method=f"{plugin}.{command}")

    def reload(self, plugin: str, dir: PathLike, grant: Optional[PathLike] = None) -> Dict[str, Any]:
        """Replaces ``plugin`` with the version in ``dir``; the old one serves until then."""
        req: Dict[str, Any] = {"op": "reload", "plugin": plugin, "dir": os.fspath(dir)}
        if grant is not None:
            req["grant"] = os.fspath(grant)
        return self._request(req)  # type: ignore[no-any-return]

    def unload(self, plugin: str) -> None:
        """Unloads ``plugin`` (its instances drain and stop)."""
        self._request({"op": "unload", "plugin": plugin})

    def stats(self) -> Any:
        """Every loaded plugin's counters and state."""
        return self._request({"op": "stats"})

    def discover(
        self, *, group: str = "plugbox.plugins", namespace: str = "plugbox_plugins",
        paths: Sequence[PathLike] = (), sites: Optional[Sequence[PathLike]] = None,
        python: Optional[PathLike] = None,
    ) -> List[Discovered]:
        """:func:`discover` with this engine's ``plugbox`` binary."""
        return discover(group=group, namespace=namespace, paths=paths, sites=sites, python=python, plugbox=self.plugbox)

    # -- events -------------------------------------------------------------------------------

    def on_event(self, callback: Callable[[Event], Any]) -> None:
        """Calls ``callback(event)`` for each later event, in order, on the event thread."""
        with self._lock:
            self._callbacks.append(callback)

    def events(self) -> Iterator[Event]:
        """Every event from this call on, until the engine closes (keep up: they queue)."""
        cv = threading.Condition()
        queue: List[Optional[Event]] = []

        def push(event: Optional[Event]) -> None:
            with cv:
                queue.append(event)
                cv.notify()

        self.subscribe(push)  # now, not at the first next()
        return _drain(cv, queue)

    def subscribe(self, push: Callable[[Optional[Event]], Any]) -> None:
        """Calls ``push(event)`` on the reader thread for each event, then ``push(None)`` when
        the engine closes. ``push`` must not block (queue the event)."""
        with self._lock:
            closed = self._closed and not self._reader.is_alive()
            if not closed:
                self._subscribers.append(push)
        if closed:
            push(None)

    # -- the line machinery (shared with AsyncEngine) -----------------------------------------

    def _request(self, request: Dict[str, Any], method: Optional[str] = None, closing: bool = False) -> Any:
        slot = Slot()
        router = self._router
        self.submit(request, lambda answer: router.settle(slot, answer), closing=closing)
        return self.result(router.wait(slot), method)

    @staticmethod
    def result(answer: Answer, method: Optional[str]) -> Any:
        """The result of an answer, or its typed error raised."""
        if answer.get("ok") is True:
            return answer.get("result")
        raise error_from_answer(answer.get("error"), method)

    def submit(self, request: Dict[str, Any], settle: Callable[[Answer], None], closing: bool = False) -> None:
        """Writes ``request`` with a fresh id; ``settle(answer)`` runs on the reader thread
        (or here, with an error answer, when serve is gone). For AsyncEngine."""
        rid = next(self._ids)
        request["id"] = rid
        with self._lock:
            dead = self._dead or (ServeError("the engine is closed") if self._closed and not closing else None)
            if dead is None:
                self._pending[rid] = settle
        if dead is not None:
            raise dead
        self._write(request)

    def _write(self, message: Dict[str, Any]) -> None:
        data = (_ENCODER.encode(message) + "\n").encode()
        with self._write_lock:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._in_fd, view):]
            except OSError as exc:
                _log.debug("writing to serve: %s", exc)  # the reader sees EOF and fails callers

    def _on_eof(self) -> None:
        with self._lock:
            if self._eof_seen:
                return
            self._eof_seen = True
        self._fail_all(ProtocolError("plugbox serve exited"))
        self._push_event(None)

    def _route(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = json.loads(line)
        except ValueError:
            _log.error("serve wrote a line that is not JSON: %r", line[:200])
            return
        op = msg.get("op") if isinstance(msg, dict) else None
        if op is None and isinstance(msg, dict):
            rid = msg.get("id")
            with self._lock:
                settle = self._pending.pop(rid, None) if isinstance(rid, int) else None
            if settle is not None:
                settle(msg)
            else:
                _log.error("serve answered no waiting request: %r", line[:200])
        elif op == "event":
            self._push_event(Event.from_line(msg))
        elif op == "host_call":
            self._pool.submit(answer_host_call, self._capabilities, msg, self._write)
        else:
            _log.error("serve wrote an unknown line: %r", line[:200])

    def _fail_all(self, error: PlugboxError) -> None:
        with self._lock:
            self._dead = error
            pending, self._pending = self._pending, {}
        for settle in pending.values():
            settle({"ok": False, "error": {"code": error.code, "message": error.message}})

    def _push_event(self, event: Optional[Event]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
            if event is None:
                self._subscribers.clear()
        for push in subscribers:
            push(event)
        with self._event_cv:
            self._event_queue.append(event)
            self._event_cv.notify()

    def _dispatch_events(self) -> None:
        while True:
            with self._event_cv:
                self._event_cv.wait_for(lambda: bool(self._event_queue))
                event = self._event_queue.pop(0)
            if event is None:
                return
            with self._lock:
                callbacks = list(self._callbacks)
            for callback in callbacks:
                try:
                    callback(event)
                except Exception:
                    _log.exception("an on_event callback raised")


def _drain(cv: threading.Condition, queue: List[Optional[Event]]) -> Iterator[Event]:
    while True:
        with cv:
            cv.wait_for(lambda: bool(queue))
            event = queue.pop(0)
        if event is None:
            return
        yield event


def _first_line(fd: int) -> bytes:
    """serve's first line, read a byte at a time so that nothing after it is consumed."""
    out = bytearray()
    while len(out) < 1 << 16:
        b = os.read(fd, 1)
        if not b:
            break
        out += b
        if b == b"\n":
            break
    return bytes(out)
