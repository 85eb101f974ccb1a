"""Serving the host's calls on a pool of threads. Imported by :meth:`Channel.serve`, after the
handshake: a plugin's start does not pay for it.

Handing work from one Python thread to another costs a wake-up and a GIL handover on every
message, which is most of a round trip; so in the common case nothing changes threads:

* a pool of worker threads serves the channel. One of them at a time, the *reader*, reads
  frames and routes them: a reply wakes the caller waiting on its id (see ``_calls``);
  ``cancel`` and ``shutdown`` act at once; a host call runs *inline*, on the reader itself,
  which then sends the reply and reads on;
* a command that calls the host while its thread is the reader reads the channel itself until
  its reply comes, routing whatever else arrives meanwhile (host calls then go to other
  workers). Any other thread waits on a lock of its own, which the reader releases;
* the thread that calls :meth:`Channel.serve` (the runtime's main thread) reads until the first
  call of a command, which it starts on a new pool thread that then reads on (so a plugin that
  is never called starts no thread). From then on it watches the reader: when a command has
  kept the reader from reading for a whole interval of its watch, it hands reading over to an
  idle worker, or to a new one, so a slow command delays other calls and cancels by a few
  milliseconds (see :meth:`Server._watch`), never blocks them. It returns as soon as serving
  ends (``shutdown``, end of stream, a protocol violation), even while commands still run;
* at most ``max_workers`` (:data:`~plugbox._channel.MAX_WORKERS`) commands run at once. A call
  that comes while that many run waits in a queue, first come first served, for the next
  command to finish. A ``cancel`` answers a queued call at once, and it never runs;
* idle workers wait, each on its own lock, to be handed reading or a call. Idle workers beyond
  :data:`KEEP_IDLE` exit after :data:`IDLE_SECONDS` unused.

Built on ``_thread`` rather than ``threading``, whose imports cost about 1.5 ms.
"""

from __future__ import annotations

import _thread

from . import _messages as msg
from ._calls import running, warn
from ._commands import BUILTIN_PREFIX, error_reply, run_command
from ._errors import LimitExceeded, PlugboxError, ProtocolError
from ._frames import BULK_THRESHOLD, frame_prefix
from ._strict_json import encode_value, to_utf8

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Final, Union

    from ._channel import Channel
    from ._commands import Registry, Reply

    _Task = Union["_HostCall", str]
    Frame = tuple[dict[str, object], bytes]

PING: Final = "plugbox.ping"
WATCH_SECONDS: Final = 0.001  # the watcher's interval while the reader runs a command
WATCH_MAX_SECONDS: Final = 0.008  # its interval, doubling up to this, while the reader reads
_QUIET_WATCHES: Final = 25  # the watcher sleeps after this many looks with nothing to watch
IDLE_SECONDS: Final = 10.0  # an idle worker beyond KEEP_IDLE exits after this long unused
KEEP_IDLE: Final = 1  # idle workers kept however long they wait
_READ: Final = "read"  # a worker's task: become the reader
_EXIT: Final = "exit"  # a worker's task: end the thread; from _step: serving has ended
_WATCH: Final = "watch"  # from _step on the serving thread: a pool thread reads now
# How a thread reads (_step's `mode`), which decides where a host call runs:
_POOL: Final = 0  # the reader, a pool thread, between commands: the call runs inline
_NESTED: Final = 1  # the reader inside a command's host call: the call goes to another worker
_SERVING: Final = 2  # the serving thread, before any call: the call's worker becomes the reader
_allocate_lock = _thread.allocate_lock
_get_ident = _thread.get_ident
_start_new_thread = _thread.start_new_thread


class _HostCall:
    """One host->plugin call to run."""

    __slots__ = ("args", "func", "id", "method")

    def __init__(self, call_id: int, method: str, args: dict[str, object]) -> None:
        self.id = call_id
        self.method = method
        self.args = args
        self.func: Callable[..., object] | None = None


class _Worker:
    """A pool thread's mailbox: ``task`` says what to do when ``wake`` is released."""

    __slots__ = ("task", "wake")

    def __init__(self, task: _Task) -> None:
        self.task = task
        self.wake = _allocate_lock()
        self.wake.acquire()


class Server:
    """The serving of one channel: the pool, the reader, the queue, the watcher."""

    def __init__(self, channel: Channel, registry: Registry) -> None:
        self._channel = channel
        self._registry = registry
        self._outgoing = channel.outgoing
        self.max_workers = channel.max_workers
        self._lock = channel._lock  # the channel's: it guards the fields below and its `_closed`
        self._running: dict[int, _HostCall] = {}  # host->plugin calls not answered yet
        self._active = 0  # commands running, inline or on workers (at most max_workers)
        self._queue: list[_HostCall] = []  # calls waiting for a command to finish
        self._idle: list[_Worker] = []  # idle pool threads, the most recently idle last
        self._lead_worker: _Worker | None = None  # the pool thread that reads, or is to
        self._lead_ident: int | None = None  # its thread id, once it reads
        self._lead_busy = False  # the reader runs a command (inline) instead of reading
        self._ticks = 0  # counts the reader's starts of commands and of host calls
        self._watcher_asleep = False  # the serving thread waits for _poke without a timeout
        self._poke = _allocate_lock()  # released to wake the serving thread
        self._poke.acquire()
        self._outcome: str | BaseException | None = None  # what serve() returns or raises

    def serve(self, first: Frame) -> str:
        """See :meth:`Channel.serve`, which has read the ``first`` frame."""
        # Read on this thread until the first call of a command: the thread started to run it
        # then becomes the reader, and this one watches. A plugin that is never called (or
        # only pinged) starts no thread. If no thread can be started (RLIMIT_NPROC, RLIMIT_AS),
        # this thread reads on, and calls fail with plugin_error while none can be.
        step = self._step(_SERVING, first)
        while True:
            if step is _EXIT:
                break
            if step is _WATCH:
                self._watch()
                break
            step = self._step(_SERVING)
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome or ""

    def closing(self) -> list[_Worker]:
        """The channel is closing (with the lock held): forget the calls, and return the idle
        workers, for the channel to release once it lets go of the lock."""
        self._running.clear()
        self._queue.clear()
        idle, self._idle = self._idle, []
        for worker in idle:
            worker.task = _EXIT
        return idle

    def _end(self, outcome: str | BaseException, reason: str) -> None:
        """Serving is over: close, and let serve() return ``outcome`` (or raise it)."""
        self._outcome = outcome
        self._channel.close(reason)
        self._wake_watcher()

    def _wake_watcher(self) -> None:
        try:
            self._poke.release()
        except RuntimeError:  # released already, and not taken yet
            pass

    def _watch(self) -> None:
        """The serving thread's loop: hand reading over when a command keeps the reader busy.

        It looks every WATCH_SECONDS while the reader runs a command, and hands reading over
        when one command has run through a whole interval. While the reader reads, the interval
        doubles up to WATCH_MAX_SECONDS (each look costs a thread wake-up, and with many
        plugins on few CPUs those add up), and after _QUIET_WATCHES such looks the watcher
        sleeps until the reader next runs a command. A command that blocks thus has reading
        taken over after 1 to about 10 ms.
        """
        poke, lock = self._poke, self._lock
        last, quiet, interval = -1, 0, WATCH_SECONDS
        while True:
            if quiet < _QUIET_WATCHES:
                poke.acquire(True, interval)
            else:
                poke.acquire()  # asleep: the reader wakes us when it runs a command
                quiet, interval = 0, WATCH_SECONDS
            if self._outcome is not None:
                return
            with lock:
                if not self._lead_busy or self._lead_worker is None:
                    quiet += 1  # the reader reads: nothing to do
                    interval = min(interval * 2, WATCH_MAX_SECONDS)
                elif self._ticks != last or self._hand_over_reading():
                    # busy, but not through a whole interval: look again soon (or handed over)
                    quiet, interval = 0, WATCH_SECONDS
                else:  # no thread to be had: try again, less often
                    quiet += 1
                    interval = min(interval * 2, WATCH_MAX_SECONDS)
                last = self._ticks
                if quiet >= _QUIET_WATCHES:
                    self._watcher_asleep = True  # the reader wakes us when it runs a command

    def _hand_over_reading(self) -> bool:
        """Make an idle (or new) pool thread the reader, the current one being busy with a
        command or a wait (with the lock held). False if no thread can be had."""
        if self._channel._closed is not None:
            return False
        if self._idle:
            worker = self._idle.pop()
            worker.task = _READ
            worker.wake.release()
        else:
            worker = _Worker(_READ)
            if not self._start_thread(worker):
                return False
        self._lead_worker = worker
        self._lead_ident = None
        self._lead_busy = False
        return True

    def _start_thread(self, worker: _Worker) -> bool:
        try:
            _start_new_thread(self._worker_main, (worker,))
        except RuntimeError:  # no thread to spare (RLIMIT_AS, RLIMIT_NPROC)
            return False
        return True

    def _worker_main(self, worker: _Worker) -> None:
        task = worker.task
        if type(task) is _HostCall:
            with self._lock:
                if self._lead_worker is worker:  # started as the reader, to run its first call
                    self._lead_ident = _get_ident()
        while True:
            if task is _READ:
                task = self._lead(worker)
            elif type(task) is _HostCall:
                self._run(task)
                task = self._finish(worker)
            else:  # _EXIT
                return

    def _lead(self, worker: _Worker) -> _Task:
        """Read and route frames as the reader, until a call is to run inline (returned) or
        serving ends (returns _EXIT)."""
        ident = _get_ident()
        if self._lead_ident != ident:  # newly made the reader (else reading on after a command)
            with self._lock:
                if self._lead_worker is not worker or self._channel._closed is not None:
                    return _EXIT  # serving ended meanwhile
                self._lead_ident = ident
        while True:
            task = self._step(_POOL)
            if task is not None:
                return task

    def _step(self, mode: int, first: Frame | None = None) -> _Task | None:
        """Read one frame (or take ``first``, read already) and route it. Returns _EXIT once
        serving has ended; for mode _POOL, a call that the reader is to run inline; for mode
        _SERVING, _WATCH once a pool thread has become the reader; else None."""
        try:
            frame = self._channel._read() if first is None else first
            if frame is None:
                self._end("eof", "the host closed the channel")
                return _EXIT
            header, body = frame
            kind = header.get("type")
            if kind == "call":
                return self._on_call(header, body, mode)
            if kind in {"result", "error"}:
                self._outgoing.on_reply(header, body)
            elif kind == "cancel":
                self._on_cancel(msg.parse_cancel(header, body))
            elif kind == "shutdown":
                msg.parse_shutdown(header, body)
                self._end("shutdown", "the host sent shutdown")
                return _EXIT
            else:
                raise ProtocolError(f"unexpected message of type {msg.short(kind)}")
        except PlugboxError as exc:
            self._end(exc, f"protocol violation by the host: {exc}")
            return _EXIT
        except BaseException as exc:  # a failure of the SDK itself: serve() raises it too
            self._end(exc, f"serving failed: {type(exc).__name__}: {exc}")
            return _EXIT
        return None

    def _on_call(self, header: dict[str, object], body: bytes, mode: int) -> _Task | None:
        """Register a host call and start it (see _step): inline (returned), on a worker that
        becomes the reader, on another worker, or queued; or answer it here (ping, unknown
        command)."""
        call_id, method, args = msg.parse_call(header, body)
        call = _HostCall(call_id, method, args)
        func = None if method.startswith(BUILTIN_PREFIX) else self._registry.get(method)
        call.func = func
        wake_watcher = False
        with self._lock:
            if call_id in self._running:
                raise ProtocolError(f"call id {call_id} is already in flight")
            if self._channel._closed is not None:
                return None  # no reply can be sent: do not run it
            self._running[call_id] = call
            if func is not None:
                if self._active >= self.max_workers:
                    self._queue.append(call)
                    return None
                self._active += 1
                if mode == _POOL:
                    wake_watcher = self._set_busy()
                elif mode == _SERVING and self._start_reader(call):
                    return _WATCH
                elif not self._give_to_worker(call):
                    self._active -= 1
                    if self._active > 0:  # a running command's thread takes it when done
                        self._queue.append(call)
                        return None
                    func = None
        if wake_watcher:
            self._wake_watcher()
        if func is not None:
            return call if mode == _POOL else None
        self._answer_here(call)
        return None

    def _answer_here(self, call: _HostCall) -> None:
        """Answer a call that runs no command: ping, an unknown command, or no thread for it."""
        if call.method == PING:
            pong: Reply = ("result", {"result": "pong"}, b"")
            self._answer(call, error_reply("invalid", f"{PING} takes no arguments") if call.args else pong)
        elif call.func is not None:
            self._answer(call, error_reply("plugin_error", f"cannot start a thread for {call.method!r}"))
        else:
            self._answer(call, error_reply("invalid", f"unknown command {call.method!r}"))

    def _set_busy(self) -> bool:
        """The reader starts user code (with the lock held). True if the watcher, asleep, must
        be woken to watch it."""
        self._lead_busy = True
        self._ticks += 1
        asleep, self._watcher_asleep = self._watcher_asleep, False
        return asleep

    def _start_reader(self, call: _HostCall) -> bool:
        """Start a pool thread to run ``call`` and then read on (with the lock held), the
        serving thread having read until now. False if no thread can be started."""
        worker = _Worker(call)
        self._lead_worker = worker
        self._lead_ident = None  # until the thread records its own
        self._set_busy()  # the watcher is not watching yet: nobody to wake
        if self._start_thread(worker):
            return True
        self._lead_worker = None
        self._lead_busy = False
        return False

    def _give_to_worker(self, call: _HostCall) -> bool:
        """Run ``call`` on an idle or new worker (with the lock held). False if none."""
        if self._idle:
            worker = self._idle.pop()
            worker.task = call
            worker.wake.release()
            return True
        return self._start_thread(_Worker(call))

    def _run(self, call: _HostCall) -> None:
        try:
            func = call.func
            assert func is not None
            running.call = call.id  # the host calls it makes are made for this call
            try:
                reply = run_command(call.method, func, call.args)
            finally:
                running.call = None
            self._answer(call, reply)
        except Exception as exc:  # run_command and _answer catch all they expect; keep the thread
            warn(f"command {call.method!r} could not be answered: {type(exc).__name__}: {exc}")

    def _finish(self, worker: _Worker) -> _Task:
        """A command finished on ``worker``: its next task. The reader reads on (or runs the
        next queued call inline); another worker runs the next queued call, or waits idle."""
        wake_watcher = False
        with self._lock:
            self._active -= 1
            if self._channel._closed is not None:
                return _EXIT
            call = None
            while self._queue:
                queued = self._queue.pop(0)
                if self._running.get(queued.id) is queued:  # not cancelled while it waited
                    call = queued
                    self._active += 1
                    break
            if self._lead_worker is worker:
                if call is None:
                    self._lead_busy = False
                    return _READ
                wake_watcher = self._set_busy()
            elif call is None:
                worker.task = _EXIT
                self._idle.append(worker)
        if call is not None:
            if wake_watcher:
                self._wake_watcher()
            return call
        return self._wait_idle(worker)

    def _wait_idle(self, worker: _Worker) -> _Task:
        """Wait, idle, for a task; or exit after IDLE_SECONDS unless one of the last idle few."""
        if worker.wake.acquire(True, IDLE_SECONDS):
            return worker.task
        while True:
            with self._lock:
                if worker not in self._idle:
                    break  # handed a task just as the wait timed out
                if len(self._idle) > KEEP_IDLE:
                    self._idle.remove(worker)
                    return _EXIT
            if worker.wake.acquire(True, IDLE_SECONDS):
                return worker.task
        worker.wake.acquire()
        return worker.task

    def await_reply(self, done: _thread.LockType, timeout: float | None) -> bool:
        """For a host call that this thread has sent: if this thread is the reader, read and route
        frames until ``done`` is released, and take it; returns True. Returns False (the caller
        then waits on ``done`` itself) if another thread reads; and also, when ``timeout`` is
        given, after handing reading over, since a read cannot time out."""
        lock = self._lock
        with lock:
            if self._lead_ident != _get_ident() or self._channel._closed is not None:
                return False
            if timeout is not None and self._hand_over_reading():
                return False
            self._lead_busy = False
        while not done.acquire(False):
            if self._step(_NESTED) is _EXIT:
                done.acquire()  # the channel closed: fail_all has released it
                break
        with lock:
            wake_watcher = self._lead_ident == _get_ident() and self._set_busy()
        if wake_watcher:
            self._wake_watcher()
        return True

    def _answer(self, call: _HostCall, reply: Reply) -> None:
        """Send the one reply to host call ``call``, unless a cancel answered it already."""
        call_id = call.id
        with self._lock:
            if self._running.get(call_id) is not call:
                return
            del self._running[call_id]
        kind, fields, body = reply
        channel = self._channel
        try:
            if kind == "result":  # the usual replies, encoded without building a header dict
                if "result" in fields:
                    value = encode_value(fields["result"], 2)
                    raw = to_utf8(f'{{"type":"result","id":{call_id},"result":{value}}}')
                elif len(body) > BULK_THRESHOLD:  # by a buffer of the host's (_bulk)
                    from ._bulk import ship_result

                    raw, body = ship_result(self._outgoing, call_id, body), b""
                else:
                    raw = f'{{"type":"result","id":{call_id},"body":true}}'.encode()
                head = frame_prefix(raw, len(body), channel.max_frame_bytes, channel.max_header_bytes)
                channel._write(head, body)
            else:
                header: dict[str, object] = {"type": kind, "id": call_id}
                header.update(fields)
                channel.send(header, body)
        except LimitExceeded as exc:
            what = f"the reply of command {call.method!r} is too large"
            self._send_error(call_id, "too_large", f"{what}: {exc.message}")
        except PlugboxError:
            pass  # the channel is closed
        except Exception as exc:  # TypeError/ValueError, or whatever a result's own methods raise
            what = f"command {call.method!r} returned a value that is not JSON-serialisable"
            self._send_error(call_id, "plugin_error", f"{what}: {type(exc).__name__}: {exc}")

    def _send_error(self, call_id: int, code: str, message: str) -> None:
        kind, fields, _ = error_reply(code, message)
        header: dict[str, object] = {"type": kind, "id": call_id}
        header.update(fields)
        self._channel._send_quietly(header)

    def _on_cancel(self, call_id: int) -> None:
        # Python cannot interrupt a running thread: answer `cancelled` now, so the host need not
        # wait, and drop the command's result when it comes (or never run it, if it is queued).
        # A cancel for a call already answered crossed our reply on the wire: nothing to do.
        with self._lock:
            running = self._running.pop(call_id, None) is not None
        if running:
            self._send_error(call_id, "cancelled", "cancelled by the host")
