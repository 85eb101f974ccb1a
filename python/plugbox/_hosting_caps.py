"""Answering serve's ``host_call`` lines with the application's Python callables."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, Mapping

from ._errors import EXCEPTION_BY_CODE, PlugboxError
from ._hosting_types import HostCall

_log = logging.getLogger("plugbox.hosting")


def answer_host_call(
    capabilities: Mapping[str, Callable[..., Any]],
    msg: Dict[str, Any],
    write: Callable[[Dict[str, Any]], None],
) -> None:
    """Runs the capability's callable as ``fn(HostCall, **args)`` and writes its
    ``host_reply``: the return value, or an ``error``. A :class:`PlugboxError` keeps its code
    (when it is one of the protocol's); any other exception is ``host_error`` with
    ``"ExceptionType: message"`` and no traceback (that is logged here, never sent)."""
    number = msg.get("call")
    try:
        result = _run(capabilities, msg)
        reply: Dict[str, Any] = {"op": "host_reply", "call": number, "result": result}
        json.dumps(result, allow_nan=False)  # not JSON: a host_error, not a reply serve cannot read
    except PlugboxError as exc:
        code = exc.code if exc.code in EXCEPTION_BY_CODE else "host_error"
        reply = {"op": "host_reply", "call": number, "error": {"code": code, "message": exc.message}}
    except Exception as exc:
        _log.exception("host capability %r raised", msg.get("capability"))
        message = f"{type(exc).__name__}: {exc}"
        reply = {"op": "host_reply", "call": number, "error": {"code": "host_error", "message": message}}
    write(reply)


def _run(capabilities: Mapping[str, Callable[..., Any]], msg: Dict[str, Any]) -> Any:
    name = str(msg.get("capability", ""))
    fn = capabilities.get(name)
    if fn is None:
        # serve only forwards capabilities it was started with, which are these.
        raise PlugboxError(f"no handler for {name}", code="host_error")
    args = msg.get("args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise PlugboxError("arguments must be an object", code="invalid")
    call = HostCall(
        call=int(msg.get("call", 0)),
        capability=name,
        plugin=str(msg.get("plugin", "")),
        instance=str(msg.get("instance", "")),
        request=msg.get("request"),
    )
    return fn(call, **args)
