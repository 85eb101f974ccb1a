from __future__ import annotations

import pytest

import plugbox
from plugbox import (
    Cancelled,
    CapabilityDenied,
    HostError,
    InvalidArgument,
    LimitExceeded,
    PlugboxError,
    PluginCrashed,
    ProtocolError,
    Timeout,
    Unavailable,
)
from plugbox._errors import EXCEPTION_BY_CODE, error_from_wire

TABLE = [
    ("denied", CapabilityDenied),
    ("invalid", InvalidArgument),
    ("too_large", LimitExceeded),
    ("rate_limited", LimitExceeded),
    ("timeout", Timeout),
    ("cancelled", Cancelled),
    ("host_error", HostError),
    ("plugin_error", PlugboxError),
    ("protocol", ProtocolError),
    ("unavailable", Unavailable),
    ("plugin_crashed", PluginCrashed),
    ("limit", LimitExceeded),
    ("invalid_argument", InvalidArgument),
]


def test_table_is_exactly_protocol_md_section_4() -> None:
    assert dict(TABLE) == dict(EXCEPTION_BY_CODE)


@pytest.mark.parametrize(("code", "cls"), TABLE)
def test_error_from_wire(code: str, cls: type[PlugboxError]) -> None:
    exc = error_from_wire(
        code, "the text", method="kv.get", traceback="tb" if code == "plugin_error" else None
    )
    assert type(exc) is cls
    assert isinstance(exc, PlugboxError)
    assert (exc.code, exc.message, exc.method) == (code, "the text", "kv.get")
    assert str(exc) == f"kv.get: the text [{code}]"


def test_default_codes_and_context() -> None:
    assert LimitExceeded("x").code == "too_large"
    assert LimitExceeded("x", code="rate_limited").code == "rate_limited"
    assert CapabilityDenied("nope").code == "denied"
    exc = PlugboxError("boom", traceback="Traceback ...")
    assert (exc.code, exc.traceback, exc.method) == ("plugin_error", "Traceback ...", None)
    assert str(exc) == "boom [plugin_error]"
    assert repr(Timeout("late", method="fs.read")) == "Timeout('late', code='timeout', method='fs.read')"


def test_public_surface() -> None:
    assert sorted(plugbox.__all__) == sorted(
        [
            "command",
            "host",
            "log",
            "PlugboxError",
            "CapabilityDenied",
            "InvalidArgument",
            "LimitExceeded",
            "Timeout",
            "Cancelled",
            "HostError",
            "ProtocolError",
            "PluginCrashed",
            "Unavailable",
        ]
    )
    for name in plugbox.__all__:
        assert getattr(plugbox, name) is not None
    assert callable(plugbox.host.call)
    assert all(callable(getattr(plugbox.log, level)) for level in ("debug", "info", "warning", "error"))


def test_codes_only_the_host_decides_map_to_their_own_classes() -> None:
    crashed = error_from_wire("plugin_crashed", "p#2: the plugin exited (killed by signal 9 (SIGKILL))")
    assert isinstance(crashed, PluginCrashed) and crashed.code == "plugin_crashed"
    limit = error_from_wire("limit", "limits.call_timeout_ms (300 ms) exceeded")
    assert isinstance(limit, LimitExceeded) and limit.code == "limit"
    assert Unavailable("gone").code == "unavailable"
    assert PluginCrashed("x").code == "plugin_crashed"


def test_an_unknown_code_is_still_a_protocol_violation() -> None:
    from plugbox._messages import parse_error_object

    with pytest.raises(ProtocolError, match="unknown error code"):
        parse_error_object({"code": "exploded", "message": "m"}, "error 3")
