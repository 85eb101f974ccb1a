"""Validation of the messages a plugin receives (protocol.md §3): exact fields, exact types.

Every check fails with :class:`ProtocolError`; the plugin then stops talking to the host.
"""

from __future__ import annotations

from ._errors import EXCEPTION_BY_CODE, PlugboxError, ProtocolError, error_from_wire
from ._frames import PROTOCOL_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

MAX_CALL_ID: Final = 2**53 - 1


class HandshakeRefused(PlugboxError):
    """The host answered ``hello`` with ``refuse``; ``code`` and ``message`` say why."""


class Welcome:
    """The parts of ``welcome`` the SDK uses."""

    __slots__ = ("capabilities", "instance", "max_frame_bytes", "max_header_bytes", "max_in_flight")

    def __init__(
        self,
        instance: str,
        capabilities: frozenset[str],
        max_frame_bytes: int,
        max_header_bytes: int,
        max_in_flight: int,
    ) -> None:
        self.instance = instance
        self.capabilities = capabilities
        self.max_frame_bytes = max_frame_bytes
        self.max_header_bytes = max_header_bytes
        self.max_in_flight = max_in_flight


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_fields(
    obj: dict[str, object], what: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    """Require exactly ``required`` plus any of ``optional``: unknown fields are violations."""
    missing = [key for key in required if key not in obj]
    if missing:
        raise ProtocolError(f"{what}: missing field(s) {', '.join(missing)}")
    unknown = [key for key in obj if key not in required and key not in optional]
    if unknown:
        raise ProtocolError(f"{what}: unknown field(s) {', '.join(map(short, unknown))}")


def no_body(what: str, body: bytes) -> None:
    if body:
        raise ProtocolError(f"{what}: the frame carries a {len(body)}-byte body it has no use for")


def get_int(obj: dict[str, object], key: str, what: str, low: int, high: int) -> int:
    value = obj[key]
    if type(value) is not int or not low <= value <= high:
        raise ProtocolError(f"{what}: {key} must be an integer in {low}..{high}, not {short(value)}")
    return value


def get_str(obj: dict[str, object], key: str, what: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: {key} must be a string, not {short(value)}")
    return value


def get_object(obj: dict[str, object], key: str, what: str) -> dict[str, object]:
    value = obj[key]
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: {key} must be an object, not {short(value)}")
    return value


def parse_welcome(header: dict[str, object], body: bytes) -> Welcome:
    check_fields(header, "welcome", ("type", "protocol", "instance", "capabilities", "limits"))
    no_body("welcome", body)
    protocol = get_int(header, "protocol", "welcome", 1, MAX_CALL_ID)
    if protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            f"welcome: the host chose protocol {protocol}; this SDK speaks {PROTOCOL_VERSION}"
        )
    capabilities = header["capabilities"]
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        raise ProtocolError(f"welcome: capabilities must be a list of strings, not {short(capabilities)}")
    limits = get_object(header, "limits", "welcome")
    names = ("max_frame_bytes", "max_header_bytes", "max_in_flight")
    check_fields(limits, "welcome limits", names)
    frame, head, in_flight = (get_int(limits, n, "welcome limits", 1, MAX_CALL_ID) for n in names)
    return Welcome(get_str(header, "instance", "welcome"), frozenset(capabilities), frame, head, in_flight)


def parse_error_object(value: object, what: str) -> tuple[str, str, str | None]:
    """``(code, message, traceback)`` from a wire ``error`` object."""
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: error must be an object, not {short(value)}")
    check_fields(value, f"{what} error", ("code", "message"), ("traceback",))
    code = get_str(value, "code", f"{what} error")
    if code not in EXCEPTION_BY_CODE:
        raise ProtocolError(f"{what}: unknown error code {short(code)}")
    traceback = get_str(value, "traceback", f"{what} error") if "traceback" in value else None
    return code, get_str(value, "message", f"{what} error"), traceback


def parse_refuse(header: dict[str, object], body: bytes) -> HandshakeRefused:
    check_fields(header, "refuse", ("type", "error"))
    no_body("refuse", body)
    code, message, _ = parse_error_object(header["error"], "refuse")
    return HandshakeRefused(message, code=code)


_CALL_FIELDS: Final = frozenset(("type", "id", "method", "args", "body"))
_RESULT_FIELDS: Final = frozenset(("type", "id", "result", "body"))


def parse_call(header: dict[str, object], body: bytes) -> tuple[int, str, dict[str, object]]:
    """``(id, method, args)``; the argument a ``body`` field names holds the frame's bytes."""
    # The common case in a few type checks; anything unusual takes the descriptive path below.
    call_id = header.get("id")
    method = header.get("method")
    args = header.get("args")
    if (
        type(call_id) is not int
        or not 1 <= call_id <= MAX_CALL_ID
        or type(method) is not str
        or type(args) is not dict
        or not header.keys() <= _CALL_FIELDS
    ):
        check_fields(header, "call", ("type", "id", "method", "args"), ("body",))
        call_id = get_int(header, "id", "call", 1, MAX_CALL_ID)
        method = get_str(header, "method", "call")
        args = get_object(header, "args", "call")
    if "body" in header:
        name = get_str(header, "body", "call")
        if name in args:
            raise ProtocolError(f"call {call_id}: body argument {short(name)} also appears in args")
        args[name] = body
    elif body:
        no_body(f"call {call_id}", body)
    return call_id, method, args


def parse_reply(header: dict[str, object], body: bytes) -> tuple[int, object, PlugboxError | None]:
    """``(id, result, None)`` for ``result`` (``bytes`` when ``body`` is true), or
    ``(id, None, error)`` for ``error``."""
    if header["type"] == "result":
        call_id = header.get("id")
        if type(call_id) is not int or not 1 <= call_id <= MAX_CALL_ID or not header.keys() <= _RESULT_FIELDS:
            check_fields(header, "result", ("type", "id"), ("result", "body"))
            call_id = get_int(header, "id", "result", 1, MAX_CALL_ID)
        has_body = header.get("body", False)
        if not isinstance(has_body, bool):
            raise ProtocolError(f"result {call_id}: body must be true or absent, not {short(has_body)}")
        if has_body == ("result" in header):
            raise ProtocolError(f"result {call_id}: needs exactly one of result and body: true")
        if has_body:
            return call_id, body, None
        if body:
            no_body(f"result {call_id}", body)
        return call_id, header["result"], None
    check_fields(header, "error", ("type", "id", "error"))
    call_id = get_int(header, "id", "error", 1, MAX_CALL_ID)
    no_body(f"error {call_id}", body)
    code, message, traceback = parse_error_object(header["error"], f"error {call_id}")
    return call_id, None, error_from_wire(code, message, traceback=traceback)


def parse_cancel(header: dict[str, object], body: bytes) -> int:
    check_fields(header, "cancel", ("type", "id"))
    no_body("cancel", body)
    return get_int(header, "id", "cancel", 1, MAX_CALL_ID)


def parse_shutdown(header: dict[str, object], body: bytes) -> None:
    check_fields(header, "shutdown", ("type",))
    no_body("shutdown", body)
