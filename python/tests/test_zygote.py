"""The zygote template's parsing of the host's fork requests (the fork itself runs in the
Rust suite, tests/zygote.rs, against the real sandbox)."""

from __future__ import annotations

import json
import socket

from plugbox import _zygote as z

PROGRAM = bytes(range(16))  # two 8-byte instructions


def request(header: object, program: bytes = PROGRAM) -> bytes:
    return json.dumps(header).encode() + b"\n" + program


def test_a_well_formed_request_gives_the_instance_and_its_program() -> None:
    message = request({"instance": "p#3", "filter_bytes": len(PROGRAM)})
    assert z._parse_request(message, [5, 6, 7], 0) == ("p#3", PROGRAM)


def test_malformed_requests_are_named_not_obeyed() -> None:
    ok = {"instance": "p#3", "filter_bytes": len(PROGRAM)}
    cases = [
        (request(ok), [5, 6], 0, "carried 2 descriptors"),
        (request(ok), [5, 6, 7], socket.MSG_CTRUNC, "cut"),
        (b"no header line", [5, 6, 7], 0, "no JSON header"),
        (b"[1]\n" + PROGRAM, [5, 6, 7], 0, "no JSON header"),
        (request({"instance": "p#3", "filter_bytes": 9}), [5, 6, 7], 0, "malformed"),
        (request({"instance": 3, "filter_bytes": 16}), [5, 6, 7], 0, "malformed"),
        (request({"instance": "p", "filter_bytes": 15}, PROGRAM[:15]), [5, 6, 7], 0, "malformed"),
        (request({"instance": "p", "filter_bytes": 0}, b""), [5, 6, 7], 0, "malformed"),
    ]
    for message, fds, flags, expected in cases:
        answer = z._parse_request(message, fds, flags)
        assert isinstance(answer, str) and expected in answer, (message, answer)


def test_received_descriptors_are_read_whole_ints_only() -> None:
    data = (5).to_bytes(4, "little") + (6).to_bytes(4, "little") + b"\x01\x02"
    assert z._received_fds([(socket.SOL_SOCKET, socket.SCM_RIGHTS, data)]) == [5, 6]
    assert z._received_fds([(socket.SOL_SOCKET, 99, data)]) == []
