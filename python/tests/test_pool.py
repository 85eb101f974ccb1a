"""The channel's threads: calls run inline on the reader, a bounded pool of reusable workers,
reading handed over while a command blocks, a queue beyond the cap, cancellation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Session

import plugbox
from plugbox import _serving

CAP = 3


@pytest.fixture
def small_pool() -> Iterator[Session]:
    s = Session(max_workers=CAP)
    try:
        yield s
    finally:
        s.close()


class Gate:
    """Commands that block until released, recording which started and how many ran at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.running = 0
        self.most = 0

    def wait(self, n: int) -> int:
        with self.lock:
            self.started.append(n)
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            assert self.open.wait(10)
        finally:
            with self.lock:
                self.running -= 1
        return n

    def wait_started(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.started) < count:
            assert time.monotonic() < deadline, f"only {self.started} started"
            time.sleep(0.01)


def test_shutdown_first_needs_no_serving_machinery(session: Session) -> None:
    session.connect()
    session.host.send({"type": "shutdown"})
    session.wait_served()
    assert session.serve_result == "shutdown"
    assert session.channel._server is None  # a cold start does not load plugbox._serving


def test_a_plugin_only_pinged_starts_no_thread(session: Session) -> None:
    session.connect()
    threads = _thread_count()
    for call_id in range(1, 4):
        session.host.call(call_id, "plugbox.ping")
        assert session.host.recv_header()["result"] == "pong"
    session.host.call(4, "missing")
    assert session.host.recv_header()["error"]["code"] == "invalid"
    assert _thread_count() == threads  # the serving thread read and answered them all


def test_sequential_calls_reuse_the_same_thread(session: Session) -> None:
    session.registry.add("who", threading.get_ident)
    session.connect()
    idents = set()
    for call_id in range(1, 31):
        session.host.call(call_id, "who")
        idents.add(session.host.recv_header()["result"])
    # Each call runs inline on the reader; a hand-over (a call that took over a millisecond on a
    # loaded machine) may add a thread, but threads are reused, never one per call.
    assert len(idents) <= 3
    assert threading.get_ident() not in idents


def test_commands_run_concurrently_up_to_the_cap(small_pool: Session) -> None:
    barrier = threading.Barrier(CAP, timeout=5)

    def meet(n: int) -> int:
        barrier.wait()  # returns only once CAP calls run at the same time
        return n

    small_pool.registry.add("meet", meet)
    small_pool.connect()
    for call_id in range(1, CAP + 1):
        small_pool.host.call(call_id, "meet", n=call_id)
    replies = {h["id"]: h["result"] for h in (small_pool.host.recv_header() for _ in range(CAP))}
    assert replies == {n: n for n in range(1, CAP + 1)}


def test_calls_beyond_the_cap_wait_for_a_worker(small_pool: Session) -> None:
    gate = Gate()
    small_pool.registry.add("hold", gate.wait)
    small_pool.connect()
    for call_id in range(1, CAP + 3):
        small_pool.host.call(call_id, "hold", n=call_id)
    gate.wait_started(CAP)
    small_pool.host.call(99, "plugbox.ping")  # the channel is still read and answered
    assert small_pool.host.recv_header() == {"type": "result", "id": 99, "result": "pong"}
    time.sleep(0.2)
    assert sorted(gate.started) == list(range(1, CAP + 1))  # the rest wait, in order
    gate.open.set()
    replies = {h["id"]: h["result"] for h in (small_pool.host.recv_header() for _ in range(CAP + 2))}
    assert replies == {n: n for n in range(1, CAP + 3)}
    assert gate.most == CAP
    assert small_pool.serve_error is None


def test_a_queued_call_cancelled_is_answered_at_once_and_never_runs(small_pool: Session) -> None:
    gate = Gate()
    small_pool.registry.add("hold", gate.wait)
    small_pool.connect()
    for call_id in range(1, CAP + 2):
        small_pool.host.call(call_id, "hold", n=call_id)
    gate.wait_started(CAP)
    small_pool.host.send({"type": "cancel", "id": CAP + 1})
    assert small_pool.host.recv_header() == {
        "type": "error",
        "id": CAP + 1,
        "error": {"code": "cancelled", "message": "cancelled by the host"},
    }
    gate.open.set()
    replies = {h["id"] for h in (small_pool.host.recv_header() for _ in range(CAP))}
    assert replies == set(range(1, CAP + 1))
    small_pool.host.assert_silent()
    assert CAP + 1 not in gate.started


def test_cancel_and_other_calls_are_served_while_a_command_blocks(session: Session) -> None:
    gate = Gate()
    session.registry.add("hold", gate.wait)
    session.registry.add("echo", lambda x: x)
    session.connect()
    session.host.call(1, "hold", n=1)
    gate.wait_started(1)
    started = time.monotonic()
    session.host.call(2, "echo", x="meanwhile")
    assert session.host.recv_header() == {"type": "result", "id": 2, "result": "meanwhile"}
    session.host.send({"type": "cancel", "id": 1})
    assert session.host.recv_header()["error"]["code"] == "cancelled"
    assert time.monotonic() - started < 2  # handed over within milliseconds, not at the end
    gate.open.set()
    session.host.call(3, "echo", x="after")  # the late result of 1 was dropped: next is 3's
    assert session.host.recv_header() == {"type": "result", "id": 3, "result": "after"}


def test_many_concurrent_calls_keep_the_pool_bounded(small_pool: Session) -> None:
    gate = Gate()
    small_pool.registry.add("hold", gate.wait)
    small_pool.connect()
    before = threading.active_count()
    threads_before = _thread_count()
    for call_id in range(1, 21):
        small_pool.host.call(call_id, "hold", n=call_id)
    gate.wait_started(CAP)
    time.sleep(0.1)
    # the reader, CAP workers running commands, perhaps one handed reading just before
    assert _thread_count() - threads_before <= CAP + 2
    gate.open.set()
    replies = {h["id"] for h in (small_pool.host.recv_header() for _ in range(20))}
    assert replies == set(range(1, 21))
    assert gate.most == CAP
    assert threading.active_count() == before  # the pool's threads are not `threading` threads


def _is_reader(session: Session) -> bool:
    server = session.channel._server
    assert server is not None
    return server._lead_ident == threading.get_ident()


def _thread_count() -> int:
    import _thread

    return _thread._count()  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def no_hand_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """The serving thread never takes reading over: whatever a test sees, the reader did."""
    monkeypatch.setattr(_serving, "WATCH_SECONDS", 60.0)
    monkeypatch.setattr(_serving, "WATCH_MAX_SECONDS", 60.0)


def test_a_host_call_from_a_command_is_read_by_its_own_thread(session: Session, no_hand_over: None) -> None:
    as_reader: list[bool] = []

    def ask(key: str) -> Any:
        as_reader.append(_is_reader(session))
        return plugbox.host.call("kv.get", key=key)

    session.registry.add("ask", ask)
    session.registry.add("echo", lambda x: x)
    session.connect(capabilities=("kv.get",))
    session.host.call(1, "ask", key="k")
    call = session.host.recv_header()
    assert call == {"type": "call", "id": 1, "method": "kv.get", "args": {"key": "k"}, "cause": 1}
    # While `ask` waits for its reply, a host call and a cancel for something else arrive.
    session.host.call(2, "echo", x=[1, 2])
    assert session.host.recv_header() == {"type": "result", "id": 2, "result": [1, 2]}
    session.host.send({"type": "cancel", "id": 77})  # not in flight: ignored
    session.host.send({"type": "result", "id": call["id"], "result": "v"})
    assert session.host.recv_header() == {"type": "result", "id": 1, "result": "v"}
    for call_id in range(3, 6):  # and again, with ids counting on
        session.host.call(call_id, "ask", key=str(call_id))
        inner = session.host.recv_header()
        session.host.send({"type": "result", "id": inner["id"], "result": inner["id"]})
        assert session.host.recv_header() == {"type": "result", "id": call_id, "result": inner["id"]}
    assert as_reader == [True] * 4  # each ran inline, and read its own reply
    assert session.serve_error is None


def test_a_host_call_timeout_inside_a_command(session: Session, no_hand_over: None) -> None:
    # The command runs inline on the reader, which cannot wait for a reply with a timeout while
    # it reads: it hands reading over first.
    def slow() -> str:
        assert _is_reader(session)
        try:
            plugbox.host.call("slow", timeout=0.2)
        except plugbox.Timeout as exc:
            return exc.code
        return "no timeout"

    session.registry.add("try_slow", slow)
    session.connect(capabilities=("slow",))
    session.host.call(1, "try_slow")
    call = session.host.recv_header()
    assert call["method"] == "slow"
    assert session.host.recv_header(timeout=5) == {"type": "cancel", "id": call["id"]}
    assert session.host.recv_header() == {"type": "result", "id": 1, "result": "timeout"}
    session.host.send({"type": "error", "id": call["id"], "error": {"code": "cancelled", "message": "c"}})
    session.host.call(2, "plugbox.ping")
    assert session.host.recv_header() == {"type": "result", "id": 2, "result": "pong"}
    assert session.serve_error is None


def test_shutdown_while_commands_block_ends_serving_at_once(session: Session) -> None:
    gate = Gate()
    session.registry.add("hold", gate.wait)
    session.connect()
    session.host.call(1, "hold", n=1)
    session.host.call(2, "hold", n=2)
    gate.wait_started(2)
    started = time.monotonic()
    session.host.send({"type": "shutdown"})
    session.wait_served(5)
    assert session.serve_result == "shutdown"
    assert time.monotonic() - started < 2
    gate.open.set()
    session.host.assert_silent()  # the abandoned commands' results are dropped


def test_with_no_thread_to_spare_the_serving_thread_reads(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_thread(*args: object) -> int:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_serving, "_start_new_thread", no_thread)
    session.registry.add("echo", lambda x: x)
    session.connect()
    session.host.call(1, "plugbox.ping")
    assert session.host.recv_header() == {"type": "result", "id": 1, "result": "pong"}
    session.host.call(2, "echo", x=1)
    assert session.host.recv_header() == {
        "type": "error",
        "id": 2,
        "error": {"code": "plugin_error", "message": "cannot start a thread for 'echo'"},
    }
    session.host.send({"type": "shutdown"})
    session.wait_served()
    assert session.serve_result == "shutdown"
