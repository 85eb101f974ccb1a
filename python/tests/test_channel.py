"""The SDK's channel in this process against a fake host: both call directions."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from conftest import Session
from fakehost import welcome

import plugbox
from plugbox import CapabilityDenied, InvalidArgument, LimitExceeded, PlugboxError, ProtocolError
from plugbox._channel import Channel
from plugbox._messages import HandshakeRefused

# -- handshake -----------------------------------------------------------------------------------


def test_hello_content_and_welcome(session: Session) -> None:
    session.registry.add("count", len)
    session.registry.add("stats", len)
    session.connect(capabilities=("log", "kv.get"), max_in_flight=7, instance="demo#3")
    assert session.hello == {
        "type": "hello",
        "protocol": 1,
        "plugin": {"name": "demo", "version": "1.0.0"},
        "commands": ["count", "stats"],
    }
    assert session.channel.outgoing.capabilities == frozenset({"log", "kv.get"})
    assert session.channel.instance == "demo#3"
    assert session.channel.outgoing.max_in_flight == 7


def test_refuse_raises_handshake_refused(session: Session) -> None:
    session.host.send({"type": "refuse", "error": {"code": "invalid", "message": "protocol 2 not supported"}})
    with pytest.raises(HandshakeRefused) as info:
        session.channel.handshake("demo", "1.0.0", [])
    assert (info.value.code, info.value.message) == ("invalid", "protocol 2 not supported")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({**welcome(), "extra": 1}, "unknown field"),
        ({**welcome(), "protocol": 2}, "protocol 2"),
        ({**welcome(), "capabilities": ["log", 3]}, "list of strings"),
        ({**welcome(), "limits": {"max_frame_bytes": 1, "max_header_bytes": 1}}, "missing field"),
        ({**welcome(), "limits": {**welcome()["limits"], "max_in_flight": 0}}, "max_in_flight"),
        ({**welcome(), "instance": None}, "instance must be a string"),
        ({"type": "call", "id": 1, "method": "x", "args": {}}, "expected welcome or refuse"),
        ({"type": "refuse", "error": {"code": "nope", "message": "m"}}, "unknown error code"),
    ],
)
def test_bad_welcome_is_a_protocol_error(session: Session, answer: dict[str, Any], message: str) -> None:
    session.host.send(answer)
    with pytest.raises(ProtocolError, match=message):
        session.channel.handshake("demo", "1.0.0", [])


def test_eof_instead_of_welcome_is_a_protocol_error(session: Session) -> None:
    session.host.sock.shutdown(1)  # SHUT_WR: the host stops writing
    with pytest.raises(ProtocolError, match="instead of answering hello"):
        session.channel.handshake("demo", "1.0.0", [])


# -- host -> plugin calls -------------------------------------------------------------------------


def test_call_dispatch_with_kwargs_and_json_result(session: Session) -> None:
    def greet(name: str, punctuation: str = "!") -> dict[str, Any]:
        return {"greeting": f"hello {name}{punctuation}", "n": [1, 2.5, None]}

    session.registry.add("greet", greet)
    session.connect()
    session.host.call(1, "greet", name="ada", punctuation="?")
    assert session.host.recv_header() == {
        "type": "result",
        "id": 1,
        "result": {"greeting": "hello ada?", "n": [1, 2.5, None]},
    }


def test_bytes_body_in_and_out(session: Session) -> None:
    seen: dict[str, Any] = {}

    def reverse(data: bytes, chunk: int) -> bytes:
        seen.update(type=type(data), chunk=chunk)
        return data[::-1]

    session.registry.add("reverse", reverse)
    session.connect()
    payload = bytes(range(256)) * 1000
    session.host.call(5, "reverse", body=payload, body_name="data", chunk=3)
    header, body = session.host.recv()
    assert header == {"type": "result", "id": 5, "body": True}
    assert body == payload[::-1]
    assert seen == {"type": bytes, "chunk": 3}


def test_commands_run_concurrently(session: Session) -> None:
    barrier = threading.Barrier(3, timeout=5)

    def meet(n: int) -> int:
        barrier.wait()  # only returns once three calls run at the same time
        return n * 10

    session.registry.add("meet", meet)
    session.connect()
    for i in (1, 2, 3):
        session.host.call(i, "meet", n=i)
    replies = {h["id"]: h["result"] for h in (session.host.recv_header() for _ in range(3))}
    assert replies == {1: 10, 2: 20, 3: 30}


def test_exception_becomes_plugin_error_with_traceback(session: Session) -> None:
    def divide(a: int, b: int) -> float:
        return a / b

    session.registry.add("divide", divide)
    session.connect()
    session.host.call(9, "divide", a=1, b=0)
    header = session.host.recv_header()
    assert header["type"] == "error" and header["id"] == 9
    error = header["error"]
    assert error["code"] == "plugin_error"
    assert error["message"] == "ZeroDivisionError: division by zero"
    assert error["traceback"].startswith("Traceback (most recent call last):")
    assert "return a / b" in error["traceback"]
    assert error["traceback"].rstrip().endswith("ZeroDivisionError: division by zero")


def test_unserialisable_result_is_a_plugin_error(session: Session) -> None:
    session.registry.add("give_set", lambda: {1, 2})
    session.registry.add("give_nan", lambda: float("nan"))
    session.connect()
    session.host.call(1, "give_set")
    error = session.host.recv_header()["error"]
    assert error["code"] == "plugin_error"
    assert "'give_set' returned a value that is not JSON-serialisable" in error["message"]
    assert "set" in error["message"]
    session.host.call(2, "give_nan")
    assert session.host.recv_header()["error"]["code"] == "plugin_error"


def test_too_large_result_is_too_large(session: Session) -> None:
    # A large result goes by a host buffer (test_bulk.py); past the protocol's 1 GiB it is
    # too_large before anything is asked or sent (calloc'd zeros: nothing is touched).
    session.registry.add("huge", lambda: bytes((1 << 30) + 1))
    session.connect()
    session.host.call(1, "huge")
    header = session.host.recv_header()
    assert header["error"]["code"] == "too_large"
    assert "1073741824" in header["error"]["message"]


def test_unknown_command_and_bad_arguments_are_invalid(session: Session) -> None:
    session.registry.add("one", lambda x: x)
    session.connect()
    session.host.call(1, "nope")
    assert session.host.recv_header() == {
        "type": "error",
        "id": 1,
        "error": {"code": "invalid", "message": "unknown command 'nope'"},
    }
    session.host.call(2, "ONE", x=1)  # names are exact: no case folding
    assert session.host.recv_header()["error"]["code"] == "invalid"
    session.host.call(3, "one", y=1)
    error = session.host.recv_header()["error"]
    assert error["code"] == "invalid" and "unexpected keyword argument 'y'" in error["message"]


def test_builtin_ping(session: Session) -> None:
    session.connect(commands=[])
    session.host.call(4, "plugbox.ping")
    assert session.host.recv_header() == {"type": "result", "id": 4, "result": "pong"}
    session.host.call(5, "plugbox.other")
    assert session.host.recv_header()["error"]["code"] == "invalid"


def test_host_cancel_answers_cancelled_once(session: Session) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "late"

    session.registry.add("slow", slow)
    session.connect()
    session.host.call(1, "slow")
    assert started.wait(5)
    session.host.send({"type": "cancel", "id": 1})
    assert session.host.recv_header() == {
        "type": "error",
        "id": 1,
        "error": {"code": "cancelled", "message": "cancelled by the host"},
    }
    release.set()
    session.host.call(2, "plugbox.ping")  # the next frame is ping's reply: no second reply to 1
    assert session.host.recv_header() == {"type": "result", "id": 2, "result": "pong"}
    session.host.send({"type": "cancel", "id": 2})  # already answered: ignored
    session.host.assert_silent()


def test_shutdown_ends_serve(session: Session) -> None:
    session.connect()
    session.host.send({"type": "shutdown"})
    session.wait_served()
    assert session.serve_result == "shutdown" and session.serve_error is None


def test_eof_ends_serve(session: Session) -> None:
    session.connect()
    session.host.sock.shutdown(1)  # SHUT_WR: the host stops writing
    session.wait_served()
    assert session.serve_result == "eof"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"type": "result", "id": 99, "result": 1}, "not outstanding"),
        ({"type": "call", "id": 1, "method": "x", "args": {}, "extra": 0}, "unknown field"),
        ({"type": "call", "id": 0, "method": "x", "args": {}}, "id must be an integer"),
        ({"type": "call", "id": True, "method": "x", "args": {}}, "id must be an integer"),
        ({"type": "call", "id": 1, "method": "x", "args": []}, "args must be an object"),
        ({"type": "call", "id": 1, "method": "x", "args": {"d": 1}, "body": "d"}, "also appears in args"),
        ({"type": "hello"}, "unexpected message"),
        ({"type": "shutdown", "now": True}, "unknown field"),
    ],
)
def test_protocol_violations_stop_serving(session: Session, frame: dict[str, Any], message: str) -> None:
    session.connect()
    session.host.send(frame)
    session.wait_served()
    assert isinstance(session.serve_error, ProtocolError)
    assert message in str(session.serve_error)


def test_over_cap_frame_from_host_stops_serving(session: Session) -> None:
    session.connect()
    session.host.send_raw((16 * 1024 * 1024 + 1).to_bytes(4, "big"))
    session.wait_served()
    assert isinstance(session.serve_error, LimitExceeded)


def test_duplicate_in_flight_call_id_is_a_violation(session: Session) -> None:
    gate = threading.Event()
    session.registry.add("wait", lambda: gate.wait(10))
    session.connect()
    session.host.call(1, "wait")
    session.host.call(1, "wait")
    session.wait_served()
    gate.set()
    assert "already in flight" in str(session.serve_error)


# -- plugin -> host calls -------------------------------------------------------------------------


def test_host_call_result_and_ids(session: Session) -> None:
    session.connect(capabilities=("kv.get",))
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(plugbox.host.call("kv.get", key="k")))
    worker.start()
    header = session.host.recv_header()
    assert header == {"type": "call", "id": 1, "method": "kv.get", "args": {"key": "k"}}
    session.host.send({"type": "result", "id": 1, "result": {"v": [1]}})
    worker.join(5)
    assert results == [{"v": [1]}]
    worker = threading.Thread(target=lambda: results.append(plugbox.host.call("kv.get", key="j")))
    worker.start()
    assert session.host.recv_header()["id"] == 2
    session.host.send({"type": "result", "id": 2, "result": None})
    worker.join(5)
    assert results == [{"v": [1]}, None]


def test_host_call_bytes_in_and_out(session: Session) -> None:
    session.connect(capabilities=("fs.write", "fs.read"))
    out: list[Any] = []
    t = threading.Thread(
        target=lambda: out.append(plugbox.host.call("fs.write", path="a.bin", data=b"\x00\x01"))
    )
    t.start()
    header, body = session.host.recv()
    assert header == {
        "type": "call",
        "id": 1,
        "method": "fs.write",
        "args": {"path": "a.bin"},
        "body": "data",
    }
    assert body == b"\x00\x01"
    session.host.send({"type": "result", "id": 1, "result": {"written": 2}})
    t.join(5)
    t = threading.Thread(target=lambda: out.append(plugbox.host.call("fs.read", path="a.bin")))
    t.start()
    assert session.host.recv_header()["method"] == "fs.read"
    session.host.send({"type": "result", "id": 2, "body": True}, b"\xffraw")
    t.join(5)
    assert out == [{"written": 2}, b"\xffraw"]


def test_only_one_bytes_argument(session: Session) -> None:
    session.connect(capabilities=("fs.write",))
    with pytest.raises(InvalidArgument, match="only one bytes argument"):
        plugbox.host.call("fs.write", a=b"1", b=b"2")
    with pytest.raises(InvalidArgument, match="cannot be sent as JSON") as info:
        plugbox.host.call("fs.write", path={1, 2})
    assert info.value.method == "fs.write"
    session.host.assert_silent(0.1)


def test_concurrent_calls_from_16_threads_route_by_id(session: Session) -> None:
    session.connect(capabilities=("echo",), max_in_flight=16)
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            results[n] = plugbox.host.call("echo", n=n, blob=bytes([n]) * n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    calls = [session.host.recv() for _ in range(16)]
    ids = sorted(h["id"] for h, _ in calls)
    assert ids == list(range(1, 17))
    random.Random(7).shuffle(calls)  # answer out of order
    for header, body in calls:
        n = header["args"]["n"]
        assert body == bytes([n]) * n
        session.host.send({"type": "result", "id": header["id"], "result": {"n": n, "id": header["id"]}})
    for t in threads:
        t.join(5)
    assert errors == []
    assert {n: r["n"] for n, r in results.items()} == {n: n for n in range(16)}
    by_id = {h["id"]: h["args"]["n"] for h, _ in calls}
    assert all(by_id[r["id"]] == n for n, r in results.items())


def test_max_in_flight_is_respected(session: Session) -> None:
    session.connect(capabilities=("echo",), max_in_flight=2)
    threads = [threading.Thread(target=plugbox.host.call, args=("echo",)) for _ in range(4)]
    for t in threads:
        t.start()
    first = [session.host.recv_header()["id"] for _ in range(2)]
    session.host.assert_silent(0.3)  # a third call waits for a free slot
    session.host.send({"type": "result", "id": first[0], "result": None})
    third = session.host.recv_header()["id"]
    session.host.assert_silent(0.2)
    for call_id in (first[1], third):
        session.host.send({"type": "result", "id": call_id, "result": None})
    fourth = session.host.recv_header()["id"]
    session.host.send({"type": "result", "id": fourth, "result": None})
    for t in threads:
        t.join(5)
    assert sorted([*first, third, fourth]) == [1, 2, 3, 4]


def test_timeout_sends_cancel_and_raises(session: Session) -> None:
    session.connect(capabilities=("slow",))
    started = time.monotonic()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            plugbox.host.call("slow", x=1, timeout=0.3)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    call = session.host.recv_header()
    assert call["args"] == {"x": 1}  # timeout is not sent to the host
    assert session.host.recv_header(timeout=5) == {"type": "cancel", "id": call["id"]}
    t.join(5)
    assert 0.25 < time.monotonic() - started < 5
    assert len(errors) == 1 and isinstance(errors[0], plugbox.Timeout)
    assert errors[0].code == "timeout" and errors[0].method == "slow"
    # The late reply is consumed quietly, and the channel keeps working.
    session.host.send({"type": "error", "id": call["id"], "error": {"code": "cancelled", "message": "c"}})
    t = threading.Thread(target=lambda: errors.append(plugbox.host.call("slow")))  # type: ignore[func-returns-value]
    t.start()
    nxt = session.host.recv_header()
    assert nxt["id"] == call["id"] + 1
    session.host.send({"type": "result", "id": nxt["id"], "result": "ok"})
    t.join(5)
    assert errors[1] == "ok"
    assert session.serve_error is None


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("denied", plugbox.CapabilityDenied),
        ("invalid", plugbox.InvalidArgument),
        ("too_large", plugbox.LimitExceeded),
        ("rate_limited", plugbox.LimitExceeded),
        ("timeout", plugbox.Timeout),
        ("cancelled", plugbox.Cancelled),
        ("host_error", plugbox.HostError),
        ("plugin_error", plugbox.PlugboxError),
        ("protocol", plugbox.ProtocolError),
    ],
)
def test_error_replies_raise_the_mapped_exception(
    session: Session, code: str, cls: type[PlugboxError]
) -> None:
    session.connect(capabilities=("kv.set",))
    caught: list[BaseException] = []

    def worker() -> None:
        try:
            plugbox.host.call("kv.set", key="k", value=1)
        except BaseException as exc:
            caught.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    call_id = session.host.recv_header()["id"]
    error = {"code": code, "message": f"it was {code}"}
    if code == "plugin_error":
        error["traceback"] = "Traceback: ..."
    session.host.send({"type": "error", "id": call_id, "error": error})
    t.join(5)
    assert len(caught) == 1
    exc = caught[0]
    assert type(exc) is cls
    assert isinstance(exc, PlugboxError)
    assert (exc.code, exc.message, exc.method) == (code, f"it was {code}", "kv.set")
    if code == "plugin_error":
        assert exc.traceback == "Traceback: ..."


def _deny_next(session: Session) -> dict[str, Any]:
    """Read the next call as the host, answer it as the host's gate answers an ungranted one."""
    header, body = session.host.recv()
    message = f"capability {header['method']!r} is not granted"
    session.host.send({"type": "error", "id": header["id"], "error": {"code": "denied", "message": message}})
    return {**header, "frame_body": body}


def _attempts_reach_the_host(session: Session, names: list[Any], **kwargs: Any) -> list[dict[str, Any]]:
    """Each name called in turn; the host denies each. Returns the headers the host read."""
    seen = []
    for name in names:
        caught: list[BaseException] = []

        def worker(name: Any = name) -> None:
            try:
                plugbox.host.call(name, **kwargs)
            except BaseException as exc:
                caught.append(exc)

        t = threading.Thread(target=worker)
        t.start()
        seen.append(_deny_next(session))
        t.join(5)
        assert len(caught) == 1 and type(caught[0]) is CapabilityDenied, caught
        assert caught[0].code == "denied" and caught[0].method == name
        assert "is not granted" in caught[0].message  # the host's message, not the SDK's
    return seen


def test_ungranted_calls_reach_the_host_which_decides(session: Session) -> None:
    # Every attempt is sent, so the host's gate records it; the caller gets the host's typed
    # answer. Lookalike names travel exactly as written (the host escapes them in its record).
    session.connect(capabilities=("kv.get", "log"))
    names = ["kv.set", "KV.GET", "LOG", "log ", "fs/../kv.set", "kv.get\n\x1b[31m", "doc.set_text"]
    names = [n.encode().decode("unicode_escape") for n in names]
    seen = _attempts_reach_the_host(session, names, key="k", value=1)
    assert [h["method"] for h in seen] == names
    assert all(h["args"] == {"key": "k", "value": 1} for h in seen)
    session.host.assert_silent(0.1)


def test_names_that_cannot_travel_are_sent_escaped_or_cut(session: Session) -> None:
    session.connect(capabilities=("kv.get",))
    long = "k" * 5000
    seen = _attempts_reach_the_host(session, ["kv\ud800.get", long])
    assert seen[0]["method"] == "kv\\ud800.get"  # the surrogate as text: never a granted name
    assert seen[1]["method"].startswith("k" * 1024 + "...[cut by the SDK, 5000 characters in all]")
    assert len(seen[1]["method"]) < 1100


def test_arguments_that_cannot_travel_are_left_out_of_an_ungranted_call(session: Session) -> None:
    session.connect(capabilities=("kv.get",))
    seen = _attempts_reach_the_host(session, ["kv.set"], key="k", value=object())
    assert seen[0]["args"] == {} and "body" not in seen[0]
    big = b"x" * (16 * 1024 * 1024 + 1)  # past max_frame_bytes
    seen = _attempts_reach_the_host(session, ["fs.write"], path="p", data=big)
    assert seen[0]["args"] == {} and seen[0]["frame_body"] == b""
    seen = _attempts_reach_the_host(session, ["fs.write"], path="p", data=b"small")
    assert seen[0]["args"] == {"path": "p"} and seen[0]["body"] == "data"
    assert seen[0]["frame_body"] == b"small"
    # A granted call whose arguments cannot travel is refused locally: nothing to decide.
    with pytest.raises(InvalidArgument):
        plugbox.host.call("kv.get", key=object())
    with pytest.raises(InvalidArgument, match="is a str"):
        plugbox.host.call(3)  # type: ignore[arg-type]
    session.host.assert_silent(0.1)


def test_call_without_a_channel_says_so() -> None:
    with pytest.raises(ProtocolError, match="not connected to a host"):
        plugbox.host.call("kv.get", key="k")


def test_closed_channel_fails_waiting_and_new_calls(session: Session) -> None:
    session.connect(capabilities=("kv.get",))
    caught: list[BaseException] = []

    def worker() -> None:
        try:
            plugbox.host.call("kv.get", key="k")
        except BaseException as exc:
            caught.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    session.host.recv_header()
    session.host.send({"type": "shutdown"})
    t.join(5)
    assert isinstance(caught[0], ProtocolError) and "closed" in caught[0].message
    with pytest.raises(ProtocolError, match="closed"):
        plugbox.host.call("kv.get", key="k")


# -- logging ------------------------------------------------------------------------------------


def test_log_is_fire_and_forget(session: Session) -> None:
    session.connect(capabilities=("log",))
    plugbox.log.info("started", items=3, tags=["a"])  # returns before any reply
    header = session.host.recv_header()
    assert header == {
        "type": "call",
        "id": 1,
        "method": "log",
        "args": {"level": "info", "message": "started", "fields": {"items": 3, "tags": ["a"]}},
    }
    for level in ("debug", "warning", "error"):
        getattr(plugbox.log, level)(f"at {level}")
        header = session.host.recv_header()
        assert header["args"] == {"level": level, "message": f"at {level}"}
    for call_id in range(1, 5):
        session.host.send({"type": "result", "id": call_id, "result": None})
    # the replies were consumed by the serving thread: the next call still works normally
    plugbox.log.info("again", obj=object())  # not JSON: sent as its repr
    header = session.host.recv_header()
    assert header["id"] == 5 and header["args"]["fields"]["obj"].startswith("<object object")
    session.host.send({"type": "result", "id": 5, "result": None})
    session.host.assert_silent(0.1)
    assert session.serve_error is None


def test_log_error_reply_goes_to_stderr(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    session.connect(capabilities=("log",))
    plugbox.log.warning("x")
    call_id = session.host.recv_header()["id"]
    session.host.send(
        {"type": "error", "id": call_id, "error": {"code": "rate_limited", "message": "slow down"}}
    )
    session.host.send({"type": "shutdown"})
    session.wait_served()
    assert "plugbox: a fire-and-forget call failed: log: slow down [rate_limited]" in capsys.readouterr().err


def test_long_log_message_is_truncated_with_a_marker(session: Session) -> None:
    session.connect(capabilities=("log",))
    plugbox.log.info("é" * 10_000)  # 20 000 bytes of UTF-8
    message = session.host.recv_header()["args"]["message"]
    encoded = message.encode("utf-8")
    assert len(encoded) <= 8 * 1024
    assert message.endswith("...[truncated, 20000 bytes in all]")
    assert message.startswith("é" * 100)


def test_log_without_capability_or_channel_goes_to_stderr(
    session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    plugbox.log.info("before connect", n=1)
    assert "[info] before connect n=1" in capsys.readouterr().err
    session.connect(capabilities=())
    plugbox.log.error("not granted")
    assert "[error] not granted" in capsys.readouterr().err
    session.host.assert_silent(0.1)


def test_channel_alone_needs_no_socket_module() -> None:
    # The channel works on any fd: a pipe pair stands in for the socket here.
    import os

    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    channel = Channel.__new__(Channel)
    Channel.__init__(channel, r1)
    channel.fd = w2  # write side of a pipe, read side is r1
    from fakehost import encode

    os.write(w1, encode(welcome()))
    channel.handshake("p", "1", ["c"])
    hello = os.read(r2, 65536)
    assert b'"commands":["c"]' in hello
    for fd in (r1, w1, r2, w2):
        os.close(fd)


def test_hostile_results_and_exceptions_still_get_one_reply(session: Session) -> None:
    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    class BadMapping(dict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[no-untyped-def,override]
            raise RuntimeError("no items either")

    def raise_bad() -> None:
        raise BadStr()

    session.registry.add("raise_bad", raise_bad)
    session.registry.add("bad_result", lambda: BadMapping(a=1))
    session.connect()
    session.host.call(1, "raise_bad")
    error = session.host.recv_header()["error"]
    assert error["code"] == "plugin_error" and error["message"].startswith("BadStr")
    session.host.call(2, "bad_result")
    error = session.host.recv_header()["error"]
    assert error["code"] == "plugin_error" and "not JSON-serialisable" in error["message"]


def test_log_fields_json_cannot_hold_are_sent_as_text(session: Session) -> None:
    session.connect(capabilities=("log",))
    plugbox.log.info("odd", mapping={1: "int key"}, nan=float("nan"))
    args = session.host.recv_header()["args"]
    assert args["fields"] == {"mapping": "{1: 'int key'}", "nan": "nan"}


def test_infinite_timeout_is_accepted_and_negative_refused(session: Session) -> None:
    session.connect(capabilities=("kv.get",))
    out: list[Any] = []
    t = threading.Thread(
        target=lambda: out.append(plugbox.host.call("kv.get", key="k", timeout=float("inf")))
    )
    t.start()
    call_id = session.host.recv_header()["id"]
    session.host.send({"type": "result", "id": call_id, "result": 5})
    t.join(5)
    assert out == [5]
    with pytest.raises(ValueError, match="timeout"):
        plugbox.host.call("kv.get", key="k", timeout=-1)
