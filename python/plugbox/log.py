"""Logging through the host's ``log`` capability: ``plugbox.log.info("done", items=3)``.

Each function sends one ``log`` call and returns without waiting for the reply: the thread that
reads the channel consumes it, and writes an error reply to stderr. The message is cut to
:data:`MAX_MESSAGE_BYTES` of UTF-8 with a marker. Fields should be JSON values; others are sent
as their ``repr()``.

Without a channel (while the plugin's module is loading), or when the ``log`` capability is not
granted, the line goes to stderr instead, which the host captures and forwards as logs.
"""

from __future__ import annotations

import sys

from . import _channel
from ._errors import PlugboxError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["MAX_MESSAGE_BYTES", "debug", "error", "info", "warning"]

MAX_MESSAGE_BYTES: Final = 8 * 1024  # protocol.md §5: message is a string of at most 8 KiB


def debug(message: str, /, **fields: object) -> None:
    """Log ``message`` at level ``debug``, with optional structured ``fields``."""
    _emit("debug", message, fields)


def info(message: str, /, **fields: object) -> None:
    """Log ``message`` at level ``info``, with optional structured ``fields``."""
    _emit("info", message, fields)


def warning(message: str, /, **fields: object) -> None:
    """Log ``message`` at level ``warning``, with optional structured ``fields``."""
    _emit("warning", message, fields)


def error(message: str, /, **fields: object) -> None:
    """Log ``message`` at level ``error``, with optional structured ``fields``."""
    _emit("error", message, fields)


def _truncate(message: str) -> str:
    """``message`` as valid UTF-8 of at most MAX_MESSAGE_BYTES, marked if it was cut."""
    raw = message.encode("utf-8", "replace")  # a lone surrogate becomes "?"
    if len(raw) <= MAX_MESSAGE_BYTES:
        return raw.decode("utf-8")
    marker = f"...[truncated, {len(raw)} bytes in all]"
    head = raw[: MAX_MESSAGE_BYTES - len(marker)]
    return head.decode("utf-8", "ignore") + marker  # "ignore" drops a character cut in two


def _emit(level: str, message: object, fields: dict[str, object]) -> None:
    text = _truncate(message if isinstance(message, str) else str(message))
    channel = _channel.active()
    if channel is not None and "log" in channel.outgoing.capabilities:
        if _send(channel, level, text, fields):
            return
        # Fields JSON cannot hold even via repr() (a nested non-str key, say): send them as text.
        if fields and _send(channel, level, text, {key: repr(value) for key, value in fields.items()}):
            return
    _to_stderr(level, text, fields)


def _send(channel: _channel.Channel, level: str, text: str, fields: dict[str, object]) -> bool:
    args: dict[str, object] = {"level": level, "message": text}
    if fields:
        args["fields"] = fields
    try:
        channel.outgoing.notify("log", args, default=repr)
    except PlugboxError:  # unencodable or too large fields, or the channel closed
        return False
    return True


def _to_stderr(level: str, text: str, fields: dict[str, object]) -> None:
    extra = "".join(f" {key}={value!r}" for key, value in fields.items())
    try:
        sys.stderr.write(f"[{level}] {text}{extra}\n")
    except (AttributeError, OSError, ValueError):
        pass
