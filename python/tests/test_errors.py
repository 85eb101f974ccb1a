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
    ProtocolError,
    Timeout,
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
        ]
    )
    for name in plugbox.__all__:
        assert getattr(plugbox, name) is not None
    assert callable(plugbox.host.call)
    assert all(callable(getattr(plugbox.log, level)) for level in ("debug", "info", "warning", "error"))
