"""The values and errors of :mod:`plugbox.hosting`: events, host calls, discovery results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ._errors import EXCEPTION_BY_CODE, PlugboxError, ProtocolError


class LoadFailed(PlugboxError):
    """``load_failed``: serve refused a ``load`` or ``reload``; the message names the step."""

    default_code = "load_failed"


class NotLoaded(PlugboxError):
    """``not_loaded``: the request named a plugin that is not loaded."""

    default_code = "not_loaded"


class ServeError(PlugboxError):
    """``plugbox serve`` itself failed: it did not start, did not speak protocol 1, exited
    (``code`` ``"protocol"``), did not exit 0 on shutdown, or answered with an error code
    this library does not know (``code`` is that code)."""

    default_code = "protocol"


#: Every error code serve answers with (docs/serve.md), mapped to its exception class.
SERVE_EXCEPTIONS: Dict[str, type] = {
    **EXCEPTION_BY_CODE,
    "load_failed": LoadFailed,
    "not_loaded": NotLoaded,
}


def error_from_answer(error: Any, method: Optional[str]) -> PlugboxError:
    """The exception for an answer's ``error`` object (an unknown code is a ServeError)."""
    if not isinstance(error, dict):
        return ProtocolError(f"serve answered with a malformed error: {error!r}")
    code = str(error.get("code", "protocol"))
    message = str(error.get("message", ""))
    tb = error.get("traceback")
    cls = SERVE_EXCEPTIONS.get(code, ServeError)
    exc: PlugboxError = cls(
        message, code=code, method=method, traceback=tb if isinstance(tb, str) else None
    )
    return exc


@dataclass(frozen=True)
class Event:
    """One ``event`` line: a plugin's state change, exit, kill, restart... (docs/serve.md).

    ``event`` is its name (``exited``, ``restarted``, ``ready``, ... or ``lost`` when serve
    dropped ``count`` events because the host read too slowly). ``seq`` is the audit record's
    place in the log; ``instance`` is ``-`` for the plugin as a whole.
    """

    event: str
    seq: Optional[int]
    plugin: Optional[str]
    version: Optional[str]
    instance: Optional[str]
    reason: Optional[str]
    detail: Dict[str, Any]
    count: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_line(cls, msg: Dict[str, Any]) -> Event:
        """Builds an Event from a decoded line (members it does not know stay in ``raw``)."""
        detail = msg.get("detail")
        return cls(
            event=str(msg.get("event", "")),
            seq=msg.get("seq"),
            plugin=msg.get("plugin"),
            version=msg.get("version"),
            instance=msg.get("instance"),
            reason=msg.get("reason"),
            detail=detail if isinstance(detail, dict) else {},
            count=msg.get("count"),
            raw=msg,
        )


@dataclass(frozen=True)
class HostCall:
    """Who is calling a host capability: given to the capability's callable as its first
    argument (the plugin's arguments follow as keyword arguments)."""

    call: int
    capability: str
    plugin: str
    instance: str
    #: The ``id`` of the host request that led to the call, when serve says (not yet: protocol
    #: 1 does not carry it).
    request: Any = None


@dataclass(frozen=True)
class Discovered:
    """A plugin ``plugbox list`` found, valid (``error`` is None) or not. No plugin code ran."""

    route: str
    location: str
    name: Optional[str]
    version: Optional[str]
    capabilities: List[str]
    error: Optional[str]

    @classmethod
    def from_json(cls, item: Dict[str, Any]) -> Discovered:
        """Builds one from an element of ``plugbox list --json``."""
        return cls(
            route=str(item.get("route", "")),
            location=str(item.get("location", "")),
            name=item.get("name"),
            version=item.get("version"),
            capabilities=list(item.get("capabilities") or []),
            error=item.get("error"),
        )
