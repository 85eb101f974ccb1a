"""Calling the host's capabilities: ``plugbox.host.call("kv.get", key="k")``."""

from __future__ import annotations

from . import _channel
from ._errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["call"]


def call(method: str, /, *, timeout: float | None = None, **kwargs: object) -> Any:
    """Call the host's capability ``method`` with keyword arguments, and return its result.

    - One argument may be ``bytes`` (or ``bytearray``/``memoryview``): it travels as the frame's
      raw body, never as base64. A result the host sends as a body comes back as ``bytes``;
      anything else is the decoded JSON value.
    - ``timeout`` (seconds) is the SDK's, not sent to the host: when it expires the SDK sends
      ``cancel`` for the call and raises :class:`~plugbox.Timeout`. ``timeout`` is therefore
      not available as a capability argument name.
    - Every call goes to the host, granted or not: the host's gate decides it and records the
      decision in the audit log. A ``method`` the host did not grant raises
      :class:`~plugbox.CapabilityDenied` (the host's answer, after one round trip), and the
      attempt is on record as a ``deny``. A name that cannot travel as it is (lone surrogates,
      over 1024 characters) is sent escaped or cut, and arguments that cannot travel are left
      out of an ungranted call, so that the attempt is recorded all the same. The gate also
      checks each argument's scope (a path outside the granted roots, for example).
    - Error replies raise the matching :class:`~plugbox.PlugboxError` subclass, with ``code``,
      ``message`` and ``method`` set.

    Safe to use from many threads at once; each call gets its own id.
    """
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
    channel = _channel.require_active("plugbox.host.call")
    args: dict[str, object] = {}
    body_name: str | None = None
    body = b""
    for name, value in kwargs.items():
        if isinstance(value, (bytes, bytearray, memoryview)):
            if body_name is not None:
                raise InvalidArgument(
                    f"only one bytes argument per call can travel as the body: "
                    f"{body_name!r} and {name!r} are both bytes",
                    method=method,
                )
            body_name, body = name, bytes(value)
        else:
            args[name] = value
    return channel.outgoing.call(method, args, body_name=body_name, body=body, timeout=timeout)
