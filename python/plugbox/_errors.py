"""Exceptions of the plugbox SDK, and the mapping from protocol error codes (protocol.md §4)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


class PlugboxError(Exception):
    """Base class of every error the SDK raises.

    Attributes:
        code: the protocol error code (``"denied"``, ``"too_large"``, ...). Errors raised
            locally by the SDK carry the code the host would have used.
        message: the human text, as the host sent it or as the SDK wrote it.
        method: the capability (or command) the failed call named, if any.
        traceback: for ``plugin_error``, the remote plugin's traceback text; else ``None``.

    A host reply with code ``plugin_error`` (a plugin's command raised) is raised as this base
    class, since no more specific class applies.
    """

    default_code: str = "plugin_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        method: str | None = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code: str = self.default_code if code is None else code
        self.message: str = message
        self.method: str | None = method
        self.traceback: str | None = traceback

    def __str__(self) -> str:
        where = "" if self.method is None else f"{self.method}: "
        return f"{where}{self.message} [{self.code}]"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, method={self.method!r})"


class CapabilityDenied(PlugboxError):
    """``denied``: the capability is not granted, or an argument is outside its scope."""

    default_code = "denied"


class InvalidArgument(PlugboxError):
    """``invalid``: malformed arguments, unknown command or method, wrong types."""

    default_code = "invalid"


class LimitExceeded(PlugboxError):
    """``too_large``, ``rate_limited`` or ``limit``: a size, rate or in-flight limit was
    exceeded, or (``limit``) a limit stopped the call or the plugin serving it; the message
    names that limit (``limits.call_timeout_ms``, ``limits.wall_seconds``, ...).

    ``code`` tells which of the three it was.
    """

    default_code = "too_large"


class Timeout(PlugboxError):
    """``timeout``: the call did not finish in time (on either side)."""

    default_code = "timeout"


class Cancelled(PlugboxError):
    """``cancelled``: the call was cancelled."""

    default_code = "cancelled"


class HostError(PlugboxError):
    """``host_error``: the host's handler for the capability failed."""

    default_code = "host_error"


class PluginCrashed(PlugboxError):
    """``plugin_crashed``: the plugin instance serving the call died without being asked to
    while the call was in flight (a host capability that calls another plugin relays it). The
    message carries its exit status or signal. Retrying may succeed on a restarted instance.
    """

    default_code = "plugin_crashed"


class Unavailable(PlugboxError):
    """``unavailable``: the plugin a call was meant for is not running (stopped, failed, or its
    restart circuit is open). A host capability that calls another plugin relays it."""

    default_code = "unavailable"


class ProtocolError(PlugboxError):
    """``protocol``: a peer broke the wire protocol, or the channel is closed or unusable."""

    default_code = "protocol"


# protocol.md §4, exactly. Any other code in a reply is itself a protocol violation.
EXCEPTION_BY_CODE: Final = {
    "denied": CapabilityDenied,
    "invalid": InvalidArgument,
    "too_large": LimitExceeded,
    "rate_limited": LimitExceeded,
    "timeout": Timeout,
    "cancelled": Cancelled,
    "host_error": HostError,
    "plugin_error": PlugboxError,
    "protocol": ProtocolError,
    "unavailable": Unavailable,
    "plugin_crashed": PluginCrashed,
    "limit": LimitExceeded,
    "invalid_argument": InvalidArgument,  # a host refused a relayed call's arguments (schema)
}


def error_from_wire(
    code: str, message: str, *, method: str | None = None, traceback: str | None = None
) -> PlugboxError:
    """Build the exception for a wire ``error`` object. ``code`` must be a known code."""
    return EXCEPTION_BY_CODE[code](message, code=code, method=method, traceback=traceback)
