from __future__ import annotations

import math

import pytest

from plugbox._strict_json import MAX_DEPTH, StrictJSONError, dumps, loads


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"a":1,"a":2}', "duplicate key 'a'"),
        (b'{"a":2,"b":0,"a":1}', "duplicate key 'a'"),
        (b'{"b":1,"a":2,"b":3}', "duplicate key 'b'"),
        (b'{"x":{"k":1,"k":1}}', "duplicate key 'k'"),
        (b'[{"ok":1},[{"k":[],"k":{}}]]', "duplicate key 'k'"),
        (b'{"\\u0061":1,"a":2}', "duplicate key 'a'"),  # equal after unescaping
        (b"NaN", "NaN"),
        (b'{"v":NaN}', "NaN"),
        (b"Infinity", "Infinity"),
        (b"[-Infinity]", "-Infinity"),
        (b'"\\ud800"', "lone surrogate"),
        (b'{"k":["ok","\\udc00x"]}', "lone surrogate"),
        (b'{"\\uDBFF":1}', "lone surrogate"),
        (b'"\\ude00\\ud83d"', "lone surrogate"),  # a pair in the wrong order
        (b'"\xff"', "invalid UTF-8"),
        (b'"\xc0\xaf"', "invalid UTF-8"),  # overlong "/"
        (b'"\xed\xa0\x80"', "invalid UTF-8"),  # a surrogate encoded as UTF-8
        (b"\xef\xbb\xbf{}", "BOM"),
        (b'{"a":1} x', "trailing data"),
        (b"{}{}", "trailing data"),
        (b"", "expected a JSON value"),
        (b"   ", "expected a JSON value"),
        (b"{'a':1}", "property name"),
        (b'"tab\there"', "control character"),
        (b"[1,]", "expected a JSON value at character 3"),
        (b"01", "trailing data"),
    ],
)
def test_rejections(raw: bytes, why: str) -> None:
    with pytest.raises(StrictJSONError, match=why if why != "BOM" else "expected a JSON value"):
        loads(raw)


def test_depth_limit_is_32() -> None:
    assert loads(nested(MAX_DEPTH)) is not None
    with pytest.raises(StrictJSONError, match="nesting deeper than 32"):
        loads(nested(MAX_DEPTH + 1))
    mixed = b'{"a":' * 16 + b"[" * 16 + b"1" + b"]" * 16 + b"}" * 16
    assert loads(mixed) is not None
    with pytest.raises(StrictJSONError, match="nesting deeper"):
        loads(b'{"a":' * 17 + b"[" * 16 + b"1" + b"]" * 16 + b"}" * 17)


def test_absurd_nesting_is_rejected_without_crashing() -> None:
    with pytest.raises(StrictJSONError, match="nesting deeper"):
        loads(nested(200_000))


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    raw = b'{"s":"' + b"[" * 100 + b'"}'
    assert loads(raw) == {"s": "[" * 100}


def test_acceptance() -> None:
    raw = (
        b' \t\r\n{"s":"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00 \xf0\x9f\x98\x80 \\\\ud800","i":-12,'
        b'"big":123456789012345678901234567890,"f":1.5e-3,"t":true,"n":null,"a":[],"o":{}}\n'
    )
    assert loads(raw) == {
        "s": "café é 😀 😀 \\ud800",
        "i": -12,
        "big": 123456789012345678901234567890,
        "f": 1.5e-3,
        "t": True,
        "n": None,
        "a": [],
        "o": {},
    }
    assert loads(b'"\\u00e9"') == "é"
    assert loads(b"0") == 0


def test_dumps_is_compact_utf8() -> None:
    assert dumps({"a": [1, 2.5, "é\n", None, True, (3,)]}) == '{"a":[1,2.5,"é\\n",null,true,[3]]}'.encode()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"x": [math.nan]}])
def test_dumps_never_emits_nan_or_infinity(value: object) -> None:
    with pytest.raises(StrictJSONError, match="Out of range float"):
        dumps(value)


def test_dumps_refuses_what_the_peer_would_reject() -> None:
    with pytest.raises(StrictJSONError, match="keys must be str"):
        dumps({1: "a", "1": "b"})  # would become a duplicate key
    with pytest.raises(StrictJSONError, match="nesting deeper"):
        dumps([[[]]] * 0 + [eval("[" * 32 + "]" * 32)])
    assert dumps(eval("[" * 32 + "]" * 32)) == nested(32)
    with pytest.raises(StrictJSONError, match="lone surrogate"):
        dumps({"k": "\udc80"})
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(StrictJSONError, match=r"nesting deeper|Circular"):
        dumps(circular)


def test_dumps_unserialisable_is_type_error_unless_default() -> None:
    with pytest.raises(TypeError, match="set is not JSON-serialisable"):
        dumps({"s": {1, 2}})
    assert dumps({"s": {1}}, default=repr) == b'{"s":"{1}"}'


def test_round_trip_of_dumps_output() -> None:
    value = {"k": ["\u2028", "\x00", '"\\', 2**60, -0.0, {"z": {}}]}
    assert loads(dumps(value)) == value
