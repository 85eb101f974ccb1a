"""Plugin->host calls: ids, the table of outstanding calls, ``max_in_flight``, timeouts.

Any thread may call. The channel's reader delivers each reply with :meth:`Outgoing.on_reply`,
releasing the caller's own lock, so replies may arrive in any order. A caller that is itself the
reader (a command running inline, see ``_channel``) reads the channel until its reply comes,
instead of waiting for another thread to hand it over.

Every call is sent, granted or not: the host's gate decides it and writes the decision to the
audit log, so an attempt at a capability the welcome did not list leaves a ``deny`` record
(protocol.md §3.1). The SDK never refuses a capability on its own.
"""

from __future__ import annotations

import _thread
import sys
from time import monotonic

from ._errors import InvalidArgument, LimitExceeded, PlugboxError, ProtocolError, Timeout
from ._messages import parse_reply
from ._strict_json import encode_str, encode_value, to_utf8

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    # Channel.send_raw: (encoded header, body) -> None
    SendRaw = Callable[[bytes, bytes], None]
    # Channel.send: (header, body, default for values JSON cannot hold) -> None
    Send = Callable[[dict[str, object], bytes, Callable[[object], object] | None], None]
    # Server.await_reply: (the call's done lock, timeout) -> whether it took the lock
    AwaitReply = Callable[[_thread.LockType, float | None], bool]

_allocate_lock = _thread.allocate_lock

# The host->plugin call the current thread is running (its id in ``running.call``), set by the
# serving pool around each command: a call the command makes says it is made for that call
# (``"cause"``), so the host can name what led to it. Threads the command starts have none.
running = _thread._local()

# An ungranted name longer than this is sent cut, with a marker. Granted names are at most 64
# characters (the manifest's rule), so a cut name can never become a granted one; the host's
# audit record keeps 256 characters of it anyway.
MAX_ATTEMPT_NAME_CHARS = 1024


class _Pending:
    """One outstanding call."""

    __slots__ = ("abandoned", "done", "error", "method", "report", "result")

    def __init__(self, method: str, *, fire_and_forget: bool = False) -> None:
        self.method = method
        self.done = _allocate_lock()
        self.done.acquire()  # released when the reply (or the channel's end) arrives
        self.result: object = None
        self.error: PlugboxError | None = None
        self.abandoned = fire_and_forget  # nobody waits: fire-and-forget, or timed out
        self.report = fire_and_forget  # write an error reply to stderr, since nobody sees it


class Outgoing:
    """The plugin's calls to the host on one channel.

    One lock guards the table of outstanding calls, the ids and the ``max_in_flight`` slots, so
    that starting a call and delivering its reply take it once each.
    """

    def __init__(self, send_raw: SendRaw, send: Send) -> None:
        self._send_raw = send_raw
        self._send = send
        self._await_reply: AwaitReply | None = None
        self._lock = _allocate_lock()  # guards the fields below
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._closed: str | None = None  # why the channel closed
        self._free = 1  # call slots free (max_in_flight minus calls outstanding or starting)
        self._waiters: list[_thread.LockType] = []  # FIFO; each is held until handed a slot
        self.capabilities: frozenset[str] = frozenset()
        self.max_in_flight = 1

    def reader_hook(self, await_reply: AwaitReply) -> None:
        """Once serving: ``await_reply(done, timeout)`` lets a caller that is the channel's
        reader read until its reply comes, and take ``done`` (returns True); else it returns
        False, and the caller waits on ``done``."""
        self._await_reply = await_reply

    def configure(self, capabilities: frozenset[str], max_in_flight: int) -> None:
        """Apply the welcome; called once, before any call."""
        self.capabilities = capabilities
        self.max_in_flight = max_in_flight
        self._free = max_in_flight

    def call(
        self,
        method: str,
        args: dict[str, object],
        *,
        body_name: str | None = None,
        body: bytes = b"",
        timeout: float | None = None,
    ) -> object:
        """Call capability ``method`` and wait for its result (``bytes`` for a binary body)."""
        deadline = None if timeout is None else monotonic() + timeout
        self._check_open(method)
        if not isinstance(method, str):
            raise InvalidArgument(f"a capability name is a str, not {type(method).__name__}")
        call = _Pending(method)
        if method in self.capabilities:
            call_id = self._start(call, self._encode(method, args, body_name, None), body, timeout)
        else:
            call_id = self._attempt(call, args, body_name, body, timeout)
        await_reply = self._await_reply
        if await_reply is not None and await_reply(call.done, timeout):
            pass  # this thread read the channel itself until the reply came
        elif deadline is None:
            call.done.acquire()
        elif not _wait(call.done, deadline - monotonic()):
            with self._lock:
                outstanding = self._pending.get(call_id) is call
                call.abandoned = outstanding
            if outstanding:
                try:
                    self._send({"type": "cancel", "id": call_id}, b"", None)
                except PlugboxError:
                    pass  # the channel closed meanwhile: there is nobody to tell
                raise Timeout(f"no reply within {timeout} s; sent cancel for call {call_id}", method=method)
            call.done.acquire()  # the reply arrived as the wait timed out
        if call.error is not None:
            raise call.error
        return call.result

    def notify(
        self, method: str, args: dict[str, object], default: Callable[[object], object] | None = None
    ) -> None:
        """Call ``method`` without waiting: the reader consumes the reply, and writes an error
        reply to stderr. Blocks only while ``max_in_flight`` calls are outstanding."""
        self._check_open(method)
        encoded = self._encode(method, args, None, default)
        self._start(_Pending(method, fire_and_forget=True), encoded, b"", None)

    def _check_open(self, method: str) -> None:
        closed = self._closed
        if closed is not None:
            raise ProtocolError(f"the channel to the host is closed ({closed})", method=method)

    def _attempt(
        self, call: _Pending, args: dict[str, object], body_name: str | None, body: bytes, timeout: float | None
    ) -> int:
        """Send a call of a capability the welcome did not list, so that the host's gate denies
        it *and records it*; the caller then raises the host's answer (``CapabilityDenied``).

        Nothing the SDK could refuse keeps the attempt from the host: a name that is not valid
        Unicode text or is over-long is sent as :func:`sendable_name` makes it, and arguments
        that cannot travel (not JSON, or past a frame limit) are left out, since the name alone
        decides an ungranted call.
        """
        name = sendable_name(call.method)
        try:
            return self._start(call, self._encode(name, args, body_name, None), body, timeout)
        except (InvalidArgument, LimitExceeded):
            pass
        return self._start(call, self._encode(name, {}, None, None), b"", timeout)

    @staticmethod
    def _encode(
        method: str,
        args: dict[str, object],
        body_name: str | None,
        default: Callable[[object], object] | None,
    ) -> bytes:
        """The call header's JSON after its id: ``,"method":...,"args":{...}[,"body":...]
        [,"cause":...]}``."""
        try:
            text = f',"method":{encode_str(method)},"args":{encode_value(args, 2, default)}'
            if body_name is not None:
                text = f'{text},"body":{encode_str(body_name)}'
            cause = getattr(running, "call", None)
            if cause is not None:
                text = f'{text},"cause":{cause}'
            return to_utf8(text + "}")
        except (TypeError, ValueError) as exc:  # StrictJSONError is a ValueError
            raise InvalidArgument(f"arguments cannot be sent as JSON: {exc}", method=method) from None

    def _start(self, call: _Pending, encoded: bytes, body: bytes, timeout: float | None) -> int:
        """Take a call slot (waiting up to ``timeout``), give ``call`` an id and send it."""
        lock = self._lock
        lock.acquire()
        if self._closed is None and self._free > 0:
            self._free -= 1
        else:
            lock.release()
            self._wait_for_slot(call.method, timeout)
            lock.acquire()
        closed, call_id = self._closed, self._next_id
        if closed is None:
            self._next_id = call_id + 1
            self._pending[call_id] = call  # before sending: the reply may come at once
        lock.release()
        if closed is not None:
            raise ProtocolError(f"the channel to the host is closed ({closed})", method=call.method)
        try:
            self._send_raw(f'{{"type":"call","id":{call_id}'.encode() + encoded, body)
        except BaseException as exc:
            with lock:
                registered = self._pending.pop(call_id, None) is not None
                if registered:
                    self._release_slot()
            if isinstance(exc, (TypeError, ValueError)):
                raise InvalidArgument(
                    f"arguments cannot be sent as JSON: {exc}", method=call.method
                ) from None
            if isinstance(exc, PlugboxError) and exc.method is None:
                exc.method = call.method
            raise
        return call_id

    def _wait_for_slot(self, method: str, timeout: float | None) -> None:
        """Wait until a slot is handed over (raises :class:`Timeout` after ``timeout``), or the
        channel closes (returns; the caller then finds it closed)."""
        with self._lock:
            if self._closed is not None:
                return
            if self._free > 0:  # freed since the caller looked
                self._free -= 1
                return
            waiter = _allocate_lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if _wait(waiter, timeout):
            return  # a reply handed its slot over, or the channel closed
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                raise Timeout(
                    f"no call slot came free within {timeout} s (max_in_flight {self.max_in_flight})",
                    method=method,
                )
        # handed a slot just as the wait timed out

    def _release_slot(self) -> None:
        """Free one slot, or hand it to the longest waiter (with the lock held)."""
        if self._waiters:
            self._waiters.pop(0).release()
        else:
            self._free += 1

    def on_reply(self, header: dict[str, object], body: bytes) -> None:
        """Deliver a ``result`` or ``error`` frame (the reader only)."""
        call_id, result, error = parse_reply(header, body)
        with self._lock:
            call = self._pending.pop(call_id, None)
            if call is not None:
                if self._waiters:
                    self._waiters.pop(0).release()
                else:
                    self._free += 1
        if call is None:
            raise ProtocolError(f"reply to call id {call_id}, which is not outstanding")
        if error is not None:
            error.method = call.method
            if call.report:
                warn(f"a fire-and-forget call failed: {error}")
        call.result, call.error = result, error
        if not call.abandoned:
            call.done.release()

    def fail_all(self, reason: str) -> None:
        """The channel closed: fail every waiting caller, and every later call, with ``reason``."""
        with self._lock:
            if self._closed is not None:
                return
            self._closed = reason
            pending = list(self._pending.values())
            self._pending.clear()
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:  # they find the channel closed
            waiter.release()
        for call in pending:
            if not call.abandoned:
                call.error = ProtocolError(f"no reply: the channel closed ({reason})", method=call.method)
                call.done.release()


def sendable_name(method: str) -> str:
    """``method`` as a call of it can travel: lone surrogates (not valid UTF-8, so not valid on
    the wire) written as ``\\udXXX`` text, and a name past :data:`MAX_ATTEMPT_NAME_CHARS` cut with
    a marker. Only names no grant can hold change: granted names are ``[a-z0-9._-]{1,64}``."""
    if len(method) > MAX_ATTEMPT_NAME_CHARS:
        method = f"{method[:MAX_ATTEMPT_NAME_CHARS]}...[cut by the SDK, {len(method)} characters in all]"
    try:
        method.encode("utf-8")
    except UnicodeEncodeError:
        method = method.encode("utf-8", "backslashreplace").decode("utf-8")
    return method


def _wait(lock: _thread.LockType, timeout: float | None) -> bool:
    """Acquire ``lock`` within ``timeout`` seconds (``None``: forever)."""
    if timeout is None:
        return lock.acquire()
    return lock.acquire(True, min(max(timeout, 0.0), _thread.TIMEOUT_MAX))


def warn(text: str) -> None:
    """One line on stderr, which the host captures; never raises."""
    try:
        sys.stderr.write(f"plugbox: {text}\n")
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
